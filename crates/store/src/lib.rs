//! mx6-store: the state behind greylisting, rate limits, escalation and
//! prefix reputation, behind one trait ([`StateStore`]) with two backends:
//!
//! - [`state`]: the trait, its errors, key and time helpers;
//! - [`backend`]: the configured backend;
//! - [`embedded`]: in memory, snapshotted to `data_dir/state/embedded.json`
//!   (periodically and at shutdown) so it survives restarts; expired entries
//!   are pruned;
//! - [`redis`]: shared by several mx6 nodes; every read-modify-write is one
//!   Lua script, so updates are atomic across nodes.
//!
//! Keys are strings of `|`-separated parts whose second part is the client
//! identity or prefix (`rl|messages|60000|2001:db8:1:2::/64`), so
//! `mx6 state show|clear PREFIX` finds everything about a prefix. Times are
//! Unix milliseconds.

pub mod backend;
pub mod embedded;
pub mod redis;
pub mod state;

pub use backend::Store;
pub use state::{key_has, now_ms, Op, Outcome, Reply, Result, Shown, StateStore, StoreError, Times};
