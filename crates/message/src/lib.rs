//! mx6-message: the header section of an RFC 5322 message, read and edited
//! as the bytes it came in. Nothing here decodes, re-folds or re-spaces a
//! field: a field that is not touched leaves mx6 exactly as it arrived, which
//! is what keeps `c=simple` DKIM signatures valid.
//!
//! - [`fields`]: where the header section ends, its fields, removal;
//! - [`edit`]: adding, inserting, changing and deleting fields, spliced into
//!   the raw header section (what milters ask for).
#![forbid(unsafe_code)]

pub mod edit;
pub mod fields;

pub use edit::{field, HeaderEdit};
pub use fields::{body, body_start, fields, has_field, header_end, header_section, remove_fields, remove_named, Field, Fields};
