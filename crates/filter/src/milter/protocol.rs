//! The protocol's numbers (libmilter's `mfdef.h`): the version, the actions
//! (`SMFIF_*`) and protocol flags (`SMFIP_*`) of OPTNEG, the steps of a
//! conversation, and what a milter agreed to.

/// Protocol version offered.
pub const VERSION: u32 = 6;

/// Actions (SMFIF_*) mx6 can carry out.
pub mod action {
    pub const ADDHDRS: u32 = 0x01;
    pub const CHGBODY: u32 = 0x02;
    pub const ADDRCPT: u32 = 0x04;
    pub const DELRCPT: u32 = 0x08;
    pub const CHGHDRS: u32 = 0x10;
    pub const QUARANTINE: u32 = 0x20;
    pub const CHGFROM: u32 = 0x40;
    pub const ADDRCPT_PAR: u32 = 0x80;
    pub const SETSYMLIST: u32 = 0x100;
    pub const ALL: u32 = 0x1ff;
}

/// Protocol flags (SMFIP_*).
pub mod proto {
    pub const NOCONNECT: u32 = 0x01;
    pub const NOHELO: u32 = 0x02;
    pub const NOMAIL: u32 = 0x04;
    pub const NORCPT: u32 = 0x08;
    pub const NOBODY: u32 = 0x10;
    pub const NOHDRS: u32 = 0x20;
    pub const NOEOH: u32 = 0x40;
    pub const NR_HDR: u32 = 0x80;
    pub const NOUNKNOWN: u32 = 0x100;
    pub const NODATA: u32 = 0x200;
    pub const SKIP: u32 = 0x400;
    pub const RCPT_REJ: u32 = 0x800;
    pub const NR_CONN: u32 = 0x1000;
    pub const NR_HELO: u32 = 0x2000;
    pub const NR_MAIL: u32 = 0x4000;
    pub const NR_RCPT: u32 = 0x8000;
    pub const NR_DATA: u32 = 0x10000;
    pub const NR_EOH: u32 = 0x40000;
    pub const NR_BODY: u32 = 0x80000;
    pub const HDR_LEADSPC: u32 = 0x100000;
    /// Everything mx6 understands (offered in OPTNEG).
    pub const ALL: u32 = 0x1fffff;
}

/// Largest body chunk (libmilter's MILTER_CHUNK_SIZE).
pub const CHUNK: usize = 65535;

/// The steps of a conversation, for deciding what to send and await.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Connect,
    Helo,
    Mail,
    Rcpt,
    Data,
    Header,
    Eoh,
    Body,
    Eom,
}

impl Step {
    /// The macro class sent before this step (`D` packets name the command).
    pub fn command(self) -> u8 {
        match self {
            Step::Connect => b'C',
            Step::Helo => b'H',
            Step::Mail => b'M',
            Step::Rcpt => b'R',
            Step::Data => b'T',
            Step::Header => b'L',
            Step::Eoh => b'N',
            Step::Body => b'B',
            Step::Eom => b'E',
        }
    }
    /// The `SMFIM_*` stage of the macro list a milter may set for this step.
    pub fn macro_stage(self) -> Option<u32> {
        Some(match self {
            Step::Connect => 0,
            Step::Helo => 1,
            Step::Mail => 2,
            Step::Rcpt => 3,
            Step::Data => 4,
            Step::Eom => 5,
            Step::Eoh => 6,
            Step::Header | Step::Body => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Connect => "connect",
            Step::Helo => "helo",
            Step::Mail => "mail",
            Step::Rcpt => "rcpt",
            Step::Data => "data",
            Step::Header => "header",
            Step::Eoh => "eoh",
            Step::Body => "body",
            Step::Eom => "eom",
        }
    }
}

/// What the milter agreed to in OPTNEG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub version: u32,
    pub actions: u32,
    pub protocol: u32,
    /// Macro names the milter asked for per stage (`SMFIR_SETSYMLIST`); a
    /// stage that is not listed gets the MTA's defaults.
    pub macros: Vec<(u32, Vec<String>)>,
}

impl Negotiated {
    /// Whether header values go with their leading white space, both ways.
    pub fn leadspc(&self) -> bool {
        self.protocol & proto::HDR_LEADSPC != 0
    }

    /// The macro names the milter asked for before `step`, if it set a list.
    pub fn macro_list(&self, step: Step) -> Option<&[String]> {
        let stage = step.macro_stage()?;
        self.macros.iter().find(|(s, _)| *s == stage).map(|(_, names)| names.as_slice())
    }

    /// Whether the milter wants this step at all.
    pub fn wants(&self, s: Step) -> bool {
        let no = match s {
            Step::Connect => proto::NOCONNECT,
            Step::Helo => proto::NOHELO,
            Step::Mail => proto::NOMAIL,
            Step::Rcpt => proto::NORCPT,
            Step::Data => proto::NODATA,
            Step::Header => proto::NOHDRS,
            Step::Eoh => proto::NOEOH,
            Step::Body => proto::NOBODY,
            Step::Eom => 0,
        };
        self.protocol & no == 0
    }
    /// Whether the milter answers this step.
    pub fn replies(&self, s: Step) -> bool {
        let nr = match s {
            Step::Connect => proto::NR_CONN,
            Step::Helo => proto::NR_HELO,
            Step::Mail => proto::NR_MAIL,
            Step::Rcpt => proto::NR_RCPT,
            Step::Data => proto::NR_DATA,
            Step::Header => proto::NR_HDR,
            Step::Eoh => proto::NR_EOH,
            Step::Body => proto::NR_BODY,
            Step::Eom => 0,
        };
        self.protocol & nr == 0
    }
}
