//! The Sendmail milter protocol, version 6 (libmilter's `mfdef.h`), as
//! Postfix and Sendmail speak it: packets are a 4-byte big-endian length, a
//! command byte and data. The MTA offers actions and protocol steps in
//! `OPTNEG`; the milter answers with the actions it will use, the steps it
//! wants skipped (`NO*`) or sent without waiting for a reply (`NR_*`), and
//! the macros it wants per stage (`SMFIR_SETSYMLIST`).
//!
//! - [`protocol`]: versions, actions, protocol flags, the steps, and what
//!   a milter negotiated;
//! - [`packet`]: the MTA's commands (CONNECT … QUIT, macros);
//! - [`reply`]: the milter's replies, decoded;
//! - [`macros`]: which macros go before each step (Postfix's defaults, or
//!   the milter's own list);
//! - [`command`]: the milter's side (`mx6 milter`): the MTA's commands
//!   decoded, the milter's replies encoded;
//! - [`header`]: header fields both ways (`SMFIP_HDR_LEADSPC`) and the
//!   modifications spliced into the raw header section.

pub mod command;
pub mod header;
pub mod macros;
pub mod packet;
pub mod protocol;
pub mod reply;

pub use command::{decode_command, encode_reply, Command, CommandError};
pub use header::{edit_header, field_value, milter_field};
pub use packet::*;
pub use protocol::*;
pub use reply::{decode, Error, Reply};
