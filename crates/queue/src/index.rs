//! The queue as a compact index, without I/O: every message not yet finished,
//! keyed by its queue id, with where its record is, which recipients are done,
//! its attempts and next attempt, and whether it is active (loaded for
//! delivery), waiting or held. Envelopes and bodies are not kept here; the
//! queue manager loads at most `[queue] active_limit` messages at once, the
//! oldest due first, as Postfix's active queue limit does. About a hundred
//! octets per message: a million waiting messages fit in a few hundred MB.
//!
//! Operator actions (`mx6 queue hold|release|delete|flush`) apply at once to a
//! waiting or held message and, for an active one, when its attempt ends.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::ops::Action;
use crate::record::Location;

pub use crate::id::{format_id, parse_id, Id};

/// Which of up to 64 recipients are done, in 8 octets (messages with more
/// recipients keep their flags in the index's side table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    bits: u64,
}

impl Done {
    fn of(flags: &[bool]) -> Done {
        Done { bits: flags.iter().take(64).enumerate().fold(0u64, |b, (i, &d)| b | (u64::from(d) << i)) }
    }
    fn flags(self, n: usize) -> Vec<bool> {
        (0..n.min(64)).map(|i| self.bits >> i & 1 == 1).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Loaded for delivery (an attempt may be under way).
    Active,
    /// Waiting for its next attempt.
    Waiting,
    /// Held until released.
    Held,
}

/// One message, in about 56 octets.
#[derive(Debug, Clone)]
pub struct Entry {
    pub loc: Location,
    done: Done,
    nrcpt: u16,
    attempts: u16,
    /// Unix seconds of the next attempt, while waiting.
    next: u32,
    /// Into the index's table of last errors; 0 = none.
    error: u32,
    pub state: State,
    /// Asked while active: hold or delete once the attempt ends.
    hold_pending: bool,
    delete_pending: bool,
    /// Its delay warning has been sent.
    pub warned: bool,
}

impl Entry {
    pub fn attempts(&self) -> u32 {
        self.attempts.into()
    }
    pub fn next(&self) -> i64 {
        self.next.into()
    }
}

fn secs(t: i64) -> u32 {
    t.clamp(0, u32::MAX as i64) as u32
}

/// How many messages are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub active: usize,
    pub waiting: usize,
    pub held: usize,
}

/// What the caller must do after an index operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Record these recipients as deleted (open ones of `done`) and forget it.
    Delete { id: Id, loc: Location, done: Vec<bool> },
}

/// A message to load for delivery.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: Id,
    pub loc: Location,
    pub done: Vec<bool>,
    pub attempts: u32,
    pub warned: bool,
}

#[derive(Debug, Default)]
pub struct Index {
    entries: HashMap<Id, Entry>,
    /// Waiting messages by next attempt, then id (oldest first).
    schedule: BTreeSet<(u32, Id)>,
    counts: Counts,
    /// Last errors, interned: many messages share the one of their destination.
    errors: Vec<Arc<str>>,
    error_ids: HashMap<Arc<str>, u32>,
    /// Done flags of messages with more than 64 recipients.
    large: HashMap<Id, Box<[bool]>>,
}

/// Distinct last errors kept; beyond it new ones read as this.
const MAX_ERRORS: usize = 16_384;
const TOO_MANY_ERRORS: &str = "(see the log for the last error)";

impl Index {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    pub fn get(&self, id: Id) -> Option<&Entry> {
        self.entries.get(&id)
    }

    /// Every message, by id.
    pub fn ids(&self) -> Vec<Id> {
        let mut v: Vec<Id> = self.entries.keys().copied().collect();
        v.sort_unstable();
        v
    }

    fn count(&mut self, s: State, delta: isize) {
        let c = match s {
            State::Active => &mut self.counts.active,
            State::Waiting => &mut self.counts.waiting,
            State::Held => &mut self.counts.held,
        };
        *c = c.saturating_add_signed(delta);
    }

    fn intern(&mut self, e: &str) -> u32 {
        if let Some(&i) = self.error_ids.get(e) {
            return i;
        }
        if self.errors.is_empty() {
            self.errors.push("".into());
            self.errors.push(TOO_MANY_ERRORS.into());
        }
        if self.errors.len() >= MAX_ERRORS {
            return 1;
        }
        let a: Arc<str> = e.into();
        let i = self.errors.len() as u32;
        self.errors.push(a.clone());
        self.error_ids.insert(a, i);
        i
    }

    /// The last error of an entry.
    pub fn last_error(&self, e: &Entry) -> Option<Arc<str>> {
        (e.error != 0).then(|| self.errors.get(e.error as usize).cloned()).flatten()
    }

    /// The done flags of an entry.
    pub fn done(&self, id: Id, e: &Entry) -> Vec<bool> {
        match self.large.get(&id) {
            Some(v) => v.to_vec(),
            None => e.done.flags(e.nrcpt.into()),
        }
    }

    fn set_done(&mut self, id: Id, flags: &[bool]) -> (Done, u16) {
        if flags.len() > 64 {
            self.large.insert(id, flags.into());
        }
        (Done::of(flags), flags.len().min(u16::MAX as usize) as u16)
    }

    /// Add a message in `state` (`next` is its next attempt when waiting).
    pub fn insert(&mut self, id: Id, loc: Location, done: &[bool], attempts: u32, state: State, next: i64) {
        self.remove(id);
        let (d, nrcpt) = self.set_done(id, done);
        let next = secs(next);
        let e = Entry {
            loc,
            done: d,
            nrcpt,
            attempts: attempts.min(u16::MAX as u32) as u16,
            next,
            error: 0,
            state,
            hold_pending: false,
            delete_pending: false,
            warned: false,
        };
        if state == State::Waiting {
            self.schedule.insert((next, id));
        }
        self.count(state, 1);
        self.entries.insert(id, e);
    }

    fn remove(&mut self, id: Id) -> Option<(Entry, Vec<bool>)> {
        let e = self.entries.remove(&id)?;
        let done = match self.large.remove(&id) {
            Some(v) => v.to_vec(),
            None => e.done.flags(e.nrcpt.into()),
        };
        if e.state == State::Waiting {
            self.schedule.remove(&(e.next, id));
        }
        self.count(e.state, -1);
        Some((e, done))
    }

    fn set_state(&mut self, id: Id, state: State, next: i64) {
        let next = secs(next);
        let Some(e) = self.entries.get_mut(&id) else { return };
        let (old, old_next) = (e.state, e.next);
        e.state = state;
        e.next = next;
        if old == State::Waiting {
            self.schedule.remove(&(old_next, id));
        }
        if state == State::Waiting {
            self.schedule.insert((next, id));
        }
        self.count(old, -1);
        self.count(state, 1);
    }

    /// When the earliest waiting message is due.
    pub fn next_due(&self) -> Option<i64> {
        self.schedule.first().map(|(t, _)| (*t).into())
    }

    /// Up to `max` messages due at `now`, oldest due first; they become active.
    pub fn take_due(&mut self, now: i64, max: usize) -> Vec<Due> {
        let now = secs(now);
        let due: Vec<(u32, Id)> = self.schedule.iter().take_while(|(t, _)| *t <= now).take(max).copied().collect();
        due.into_iter()
            .filter_map(|(_, id)| {
                self.set_state(id, State::Active, 0);
                let e = self.entries.get(&id)?;
                Some(Due { id, loc: e.loc, done: self.done(id, e), attempts: e.attempts.into(), warned: e.warned })
            })
            .collect()
    }

    /// An attempt of an active message left recipients open: it waits for
    /// `next` (or is held or deleted, when that was asked meanwhile).
    pub fn deferred(&mut self, id: Id, done: &[bool], attempts: u32, next: i64, error: &str) -> Option<Effect> {
        if !self.entries.contains_key(&id) {
            return None;
        }
        let error = (!error.is_empty()).then(|| self.intern(error));
        let (d, nrcpt) = self.set_done(id, done);
        let e = self.entries.get_mut(&id)?;
        e.done = d;
        e.nrcpt = nrcpt;
        e.attempts = attempts.min(u16::MAX as u32) as u16;
        if let Some(i) = error {
            e.error = i;
        }
        let (hold, delete) = (e.hold_pending, e.delete_pending);
        e.hold_pending = false;
        if delete {
            let (e, done) = self.remove(id)?;
            return Some(Effect::Delete { id, loc: e.loc, done });
        }
        self.set_state(id, if hold { State::Held } else { State::Waiting }, next);
        None
    }

    /// The delay warning of `id` has been sent.
    pub fn set_warned(&mut self, id: Id) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.warned = true;
        }
    }

    /// Whether an active message should be held or deleted before its attempt.
    pub fn parked(&self, id: Id) -> bool {
        self.entries.get(&id).is_some_and(|e| e.hold_pending || e.delete_pending)
    }

    /// Every recipient is done: forget it.
    pub fn finished(&mut self, id: Id) {
        self.remove(id);
    }

    /// An operator action on `id` (every message when `None`) at `now`: the
    /// number of messages it applied to and what the caller must do.
    pub fn act(&mut self, action: Action, id: Option<Id>, now: i64) -> Result<(usize, Vec<Effect>), Id> {
        let ids = match id {
            Some(i) if self.entries.contains_key(&i) => vec![i],
            Some(i) => return Err(i),
            None => self.ids(),
        };
        let mut effects = Vec::new();
        for &i in &ids {
            let Some(e) = self.entries.get_mut(&i) else { continue };
            match (action, e.state) {
                (Action::Hold, State::Active) => e.hold_pending = true,
                (Action::Hold, State::Waiting) => self.set_state(i, State::Held, 0),
                (Action::Release, State::Active) => e.hold_pending = false,
                (Action::Release, State::Held) => self.set_state(i, State::Waiting, now),
                (Action::Delete, State::Active) => e.delete_pending = true,
                (Action::Delete, _) => {
                    if let Some((e, done)) = self.remove(i) {
                        effects.push(Effect::Delete { id: i, loc: e.loc, done });
                    }
                }
                (Action::Flush, State::Waiting) if i64::from(e.next) > now => self.set_state(i, State::Waiting, now),
                _ => {}
            }
        }
        Ok((ids.len(), effects))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(n: u64) -> Location {
        Location { segment: 1, offset: n * 100, env_len: 10, body_len: 50, v1: false }
    }

    #[test]
    fn done_flags_are_compact_and_exact() {
        let mut x = Index::default();
        for n in [0usize, 1, 5, 64, 65, 300] {
            let flags: Vec<bool> = (0..n).map(|i| i % 3 == 0).collect();
            x.insert(n as u64, loc(1), &flags, 0, State::Waiting, 0);
            assert_eq!(x.done(n as u64, x.get(n as u64).unwrap()), flags);
        }
        assert!(std::mem::size_of::<Entry>() <= 56, "{}", std::mem::size_of::<Entry>());
    }

    #[test]
    fn oldest_due_first_within_the_limit() {
        let mut x = Index::default();
        x.insert(3, loc(3), &[false], 1, State::Waiting, 100);
        x.insert(2, loc(2), &[false], 1, State::Waiting, 50);
        x.insert(1, loc(1), &[false, true], 2, State::Waiting, 50);
        x.insert(9, loc(9), &[false], 0, State::Waiting, 999);
        assert_eq!(x.next_due(), Some(50));
        let due = x.take_due(100, 2);
        assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(due[0].done, [false, true]);
        assert_eq!(x.counts(), Counts { active: 2, waiting: 2, held: 0 });
        assert_eq!(x.take_due(100, 10).len(), 1);
        assert!(x.take_due(100, 10).is_empty());
        assert_eq!(x.deferred(1, &[true, true], 3, 400, "451 later"), None);
        assert_eq!(x.last_error(x.get(1).unwrap()).as_deref(), Some("451 later"));
        assert_eq!(x.next_due(), Some(400));
        x.finished(2);
        assert_eq!(x.counts(), Counts { active: 1, waiting: 2, held: 0 });
    }

    #[test]
    fn operator_actions() {
        let mut x = Index::default();
        x.insert(1, loc(1), &[false, true], 1, State::Waiting, 500);
        x.insert(2, loc(2), &[false], 1, State::Active, 0);
        assert_eq!(x.act(Action::Hold, Some(1), 10), Ok((1, vec![])));
        assert_eq!(x.get(1).unwrap().state, State::Held);
        assert!(x.take_due(1000, 10).is_empty(), "held messages are not due");
        x.act(Action::Release, Some(1), 10).unwrap();
        assert_eq!((x.get(1).unwrap().state, x.next_due()), (State::Waiting, Some(10)));
        x.act(Action::Hold, Some(2), 10).unwrap();
        assert!(x.parked(2));
        assert_eq!(x.deferred(2, &[false], 2, 900, ""), None);
        assert_eq!(x.get(2).unwrap().state, State::Held, "the hold applies when the attempt ends");
        let (n, eff) = x.act(Action::Delete, Some(1), 10).unwrap();
        assert_eq!((n, eff), (1, vec![Effect::Delete { id: 1, loc: loc(1), done: vec![false, true] }]));
        assert_eq!(x.act(Action::Delete, Some(7), 10), Err(7));
        x.insert(3, loc(3), &[false], 1, State::Waiting, 5000);
        x.act(Action::Flush, None, 20).unwrap();
        assert_eq!(x.next_due(), Some(20));
        assert_eq!(x.counts(), Counts { active: 0, waiting: 1, held: 1 });
        assert_eq!(parse_id(&format_id(0xabc)), Some(0xabc));
        assert_eq!(parse_id("xyz"), None);
    }
}
