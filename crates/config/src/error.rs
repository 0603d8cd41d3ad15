//! The one error style of configuration checks: file, line, dotted key and
//! what is wrong with it; parse errors and whole-file checks alike.

/// How bad a finding is: an error stops `mx6 serve` and makes `mx6 config
/// check` exit 1; a warning is printed and changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// A configuration finding: where and what.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 when the finding is not tied to a line.
    pub line: usize,
    /// Dotted key path, e.g. `limits.message_size`, `listener[1].address`.
    pub key: String,
    pub message: String,
    pub severity: Severity,
}

impl ConfigError {
    pub fn new(file: &str, line: usize, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError { file: file.into(), line, key: key.into(), message: message.into(), severity: Severity::Error }
    }

    /// `file:line: key: message` (the line left out when unknown).
    fn render(&self) -> String {
        let warn = if self.severity == Severity::Warning { "warning: " } else { "" };
        match self.line {
            0 => format!("{}: {}: {warn}{}", self.file, self.key, self.message),
            n => format!("{}:{n}: {}: {warn}{}", self.file, self.key, self.message),
        }
    }
}
