//! How a conversation with a milter can fail; each one leads to the
//! milter's `on_failure`.

use std::time::Duration;

use mx6_filter::milter::{self, Reply as MReply};

#[derive(Debug, thiserror::Error)]
pub enum MilterError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(#[from] milter::Error),
    #[error("milter closed the connection")]
    Closed,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("milter speaks protocol version {0}; mx6 needs 2 or later")]
    Version(u32),
    #[error("unexpected reply {0:?} during {1}")]
    Unexpected(Box<MReply>, &'static str),
    #[error("replacement body larger than {0} octets")]
    BodyTooLarge(usize),
}
