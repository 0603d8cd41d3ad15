//! One connection to one milter for one SMTP session: OPTNEG, then one step
//! at a time — its macros, its packet, and the milter's final reply unless
//! it negotiated the step away (`SMFIP_NO*`) or said it will not answer it
//! (`SMFIP_NR_*`). Every write and every reply waits at most the milter's
//! `timeout` (connect and the SMTP commands) or `content_timeout` (headers,
//! body, end of message); a progress reply (`SMFIR_PROGRESS`) starts the
//! wait again.
//!
//! Defends against: a milter that stalls (the timeout), closes the
//! connection, breaks the protocol or replies out of turn (an error: the
//! caller applies `on_failure`).

use std::time::Duration;

use mx6_config::MilterConfig;
use mx6_filter::milter::{self, macros, Negotiated, Reply as MReply, Step};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::content_filter::milter::error::MilterError;
use crate::content_filter::milter::mods::Mods;
use crate::net::stream::{open, Stream};

/// The protocol steps mx6 offers: everything but `SMFIP_RCPT_REJ` (refused
/// recipients are not shown to milters) .
const OFFERED: u32 = milter::proto::ALL & !milter::proto::RCPT_REJ;

pub struct MilterConn {
    s: Box<dyn Stream>,
    buf: Vec<u8>,
    pub neg: Negotiated,
    /// The wait for the step under way.
    timeout: Duration,
    command_timeout: Duration,
    content_timeout: Duration,
    /// `SMFIR_QUARANTINE` may come at any step (Postfix and Sendmail take
    /// it anywhere): kept until the message is done.
    pub quarantine: Option<String>,
}

impl MilterConn {
    /// Connect and negotiate.
    pub async fn open(cfg: &MilterConfig) -> Result<MilterConn, MilterError> {
        let t = cfg.timeout;
        let s = tokio::time::timeout(t, open(&cfg.address)).await.map_err(|_| MilterError::Timeout(t))??;
        let mut c = MilterConn {
            s,
            buf: Vec::new(),
            neg: Negotiated { version: 0, actions: 0, protocol: 0, macros: Vec::new() },
            timeout: t,
            command_timeout: t,
            content_timeout: cfg.content_timeout,
            quarantine: None,
        };
        c.send(&milter::optneg(OFFERED)).await?;
        match c.reply().await? {
            MReply::OptNeg(mut n) if n.version >= 2 => {
                n.protocol &= OFFERED;
                n.actions &= milter::action::ALL;
                c.neg = n;
                Ok(c)
            }
            MReply::OptNeg(n) => Err(MilterError::Version(n.version)),
            other => Err(MilterError::Unexpected(Box::new(other), "optneg")),
        }
    }

    pub async fn send(&mut self, b: &[u8]) -> Result<(), MilterError> {
        let t = self.timeout;
        tokio::time::timeout(t, self.s.write_all(b)).await.map_err(|_| MilterError::Timeout(t))??;
        Ok(())
    }

    async fn reply(&mut self) -> Result<MReply, MilterError> {
        loop {
            if let Some((r, n)) = milter::decode(&self.buf)? {
                self.buf.drain(..n);
                return Ok(r);
            }
            let mut chunk = [0u8; 8192];
            let t = self.timeout;
            let n = tokio::time::timeout(t, self.s.read(&mut chunk)).await.map_err(|_| MilterError::Timeout(t))??;
            if n == 0 {
                return Err(MilterError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Send `step` (its macros chosen from `known`, then `packet`) and wait
    /// for its final reply. `None`: the milter does not take this step, or
    /// does not answer it. Modifications are taken only at end of message,
    /// into `mods`. The macros go even for a step the milter negotiated away
    /// (as Postfix sends them), so later steps can read them.
    pub async fn step(
        &mut self,
        step: Step,
        known: &[(&'static str, String)],
        packet: &[u8],
        mut mods: Option<&mut Mods>,
    ) -> Result<Option<MReply>, MilterError> {
        self.timeout = match step {
            Step::Header | Step::Eoh | Step::Body | Step::Eom => self.content_timeout,
            _ => self.command_timeout,
        };
        let chosen = macros::select(&self.neg, step, known);
        if !chosen.is_empty() {
            self.send(&milter::macros(step, &chosen)).await?;
        }
        if !self.neg.wants(step) {
            return Ok(None);
        }
        self.send(packet).await?;
        if !self.neg.replies(step) {
            return Ok(None);
        }
        loop {
            let r = self.reply().await?;
            match r {
                MReply::Progress => continue,
                MReply::Quarantine(reason) => {
                    self.quarantine = Some(reason);
                    continue;
                }
                _ => {}
            }
            if r.is_final() {
                return Ok(Some(r));
            }
            match mods.as_deref_mut() {
                Some(m) if step == Step::Eom => m.take(r)?,
                _ => return Err(MilterError::Unexpected(Box::new(r), step.as_str())),
            }
        }
    }
}
