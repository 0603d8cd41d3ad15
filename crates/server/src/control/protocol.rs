//! The control protocol between `mx6 queue` / `mx6 state` and a running
//! server, over `data_dir/control.sock`: one JSON request per line, one JSON
//! response per line, e.g. `{"op":"hold","id":"…"}`,
//! `{"op":"state_show","parts":["2001:db8:1:2::/64"]}`, `{"op":"report_flush"}`.

use std::path::{Path, PathBuf};

use mx6_queue::listing::Listed;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    List,
    Show {
        id: String,
    },
    Hold {
        id: String,
    },
    Release {
        id: String,
    },
    Delete {
        id: String,
    },
    Flush,
    /// Prefixes or identities, as [`crate::checks::state::parts`] makes them.
    StateShow {
        parts: Vec<String>,
    },
    StateClear {
        parts: Vec<String>,
    },
    /// `mx6 report list`.
    ReportList,
    /// `mx6 report show ID`.
    ReportShow {
        id: String,
    },
    /// `mx6 report flush`.
    ReportFlush,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub messages: Vec<Listed>,
    /// `show`: the message's header section.
    #[serde(default)]
    pub headers: String,
    #[serde(default)]
    pub affected: usize,
    /// `state_show`: entries per part, in the order asked.
    #[serde(default)]
    pub state: Vec<(String, Vec<mx6_store::Shown>)>,
    /// `report_list`: the pending reports.
    #[serde(default)]
    pub reports: Vec<crate::reports::outgoing::Pending>,
    /// `report_show`: the document.
    #[serde(default)]
    pub document: String,
}

impl Response {
    pub fn error(e: impl Into<String>) -> Response {
        Response { error: e.into(), ..Default::default() }
    }
}

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form() {
        assert_eq!(serde_json::to_string(&Request::Hold { id: "q".into() }).unwrap(), r#"{"op":"hold","id":"q"}"#);
        assert_eq!(serde_json::to_string(&Request::Flush).unwrap(), r#"{"op":"flush"}"#);
        let r: Request = serde_json::from_str(r#"{"op":"state_clear","parts":["2001:db8::/64"]}"#).unwrap();
        assert_eq!(r, Request::StateClear { parts: vec!["2001:db8::/64".into()] });
        assert!(serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).is_err());
    }
}
