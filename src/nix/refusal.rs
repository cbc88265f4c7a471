//! Packages the package set refuses, as prepare-image.nix reports them on
//! stderr during evaluation (before anything is built):
//!
//! ```text
//! trace: nixery-evaluating "<name>"      before each name is evaluated
//! trace: nixery-evaluated                after the last one
//! trace: nixery-refused {"name": ..., "reason": ...}
//! error: <why evaluation stopped>
//! ```
//!
//! [`Markers`] collects these lines while Nix runs; [`refusals`] turns them
//! and the error message into [`Refusal`]s once Nix has failed.

use std::fmt;

use serde::Deserialize;

/// Prefix of every marker line.
const MARKER: &str = "trace: nixery-";

/// Most marker lines kept for one Nix run.
const MAX_MARKERS: usize = 10_000;

/// Longest message of the package set passed on to clients, in characters.
const MAX_MESSAGE_CHARS: usize = 500;

/// Why the package set refuses a package.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// No attribute of that name (in any of the lookup forms).
    NotFound,
    /// The attribute is not a derivation (a package set, a function, ...).
    NotADerivation,
    /// The attribute throws when evaluated; nixpkgs' removed packages are
    /// aliases that throw.
    Throws,
    /// Its licence is unfree and `NIXERY_ALLOW_UNFREE` is off.
    Unfree,
    /// Marked as broken.
    Broken,
    /// Not available on the image's system.
    Unsupported,
    /// Marked as insecure (known vulnerabilities).
    Insecure,
    /// Its evaluation fails for another reason.
    EvalError,
}

impl RefusalReason {
    /// Whether the package is missing as such (rather than present but
    /// refused by the package set's policy or failing to evaluate).
    pub fn is_absent(self) -> bool {
        matches!(
            self,
            RefusalReason::NotFound | RefusalReason::NotADerivation | RefusalReason::Throws
        )
    }
}

/// A requested package the package set refuses, with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The name as requested (one component of the image name).
    pub package: String,
    /// Why.
    pub reason: RefusalReason,
    /// The image's Nix system (`x86_64-linux`).
    pub system: String,
    /// The package set's own error message, when it gave one (paths
    /// replaced by `<path>`).
    pub message: Option<String>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.package;
        match self.reason {
            RefusalReason::NotFound => write!(f, "package '{name}' is not in the package set")?,
            RefusalReason::NotADerivation => write!(
                f,
                "'{name}' is not a package (it is an attribute set or function of the package set)"
            )?,
            RefusalReason::Throws => write!(
                f,
                "package '{name}' cannot be used (removed, or it throws when evaluated)"
            )?,
            RefusalReason::Unfree => write!(
                f,
                "package '{name}' has an unfree licence, which this registry does not serve \
                 (its operator can allow unfree packages with NIXERY_ALLOW_UNFREE=true)"
            )?,
            RefusalReason::Broken => write!(f, "package '{name}' is marked as broken")?,
            RefusalReason::Unsupported => {
                write!(f, "package '{name}' is not available on {}", self.system)?
            }
            RefusalReason::Insecure => write!(
                f,
                "package '{name}' is marked as insecure (it has known vulnerabilities)"
            )?,
            RefusalReason::EvalError => {
                write!(f, "package '{name}' failed to evaluate")?;
            }
        }
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}

/// The marker lines of one Nix run's stderr.
#[derive(Debug, Default)]
pub struct Markers {
    lines: Vec<String>,
}

impl Markers {
    /// Keep `line` if it is a marker.
    pub fn offer(&mut self, line: &str) {
        if line.starts_with(MARKER) && self.lines.len() < MAX_MARKERS {
            self.lines.push(line.to_string());
        }
    }
}

#[derive(Deserialize)]
struct RawRefusal {
    name: String,
    reason: RefusalReason,
}

/// The refusals of a failed Nix run, given its markers and the last lines
/// of its stderr; empty when the failure was not about requested packages
/// (the package set itself failed, or a build did).
pub fn refusals(markers: &Markers, stderr_tail: &str, system: &str) -> Vec<Refusal> {
    let mut refused = Vec::new();
    let mut evaluating: Option<String> = None;
    for line in &markers.lines {
        let Some(rest) = line.strip_prefix(MARKER) else {
            continue;
        };
        if let Some(json) = rest.strip_prefix("refused ") {
            if let Ok(raw) = serde_json::from_str::<RawRefusal>(json) {
                refused.push((raw.name, raw.reason));
            }
        } else if let Some(json) = rest.strip_prefix("evaluating ") {
            evaluating = serde_json::from_str::<String>(json).ok();
        } else if rest == "evaluated" {
            evaluating = None;
        }
    }
    let message = error_message(stderr_tail);
    if refused.is_empty() {
        // An error tryEval cannot catch stopped the evaluation of a name.
        return evaluating
            .map(|package| Refusal {
                package,
                reason: RefusalReason::EvalError,
                system: system.to_string(),
                message,
            })
            .into_iter()
            .collect();
    }
    // prepare-image.nix ends by forcing the first refusal that can say why
    // in its own words; its message belongs to that one.
    let mut message = message.filter(|m| !m.starts_with("nixery: "));
    refused
        .into_iter()
        .map(|(package, reason)| {
            let message = if matches!(reason, RefusalReason::Throws | RefusalReason::EvalError) {
                message.take()
            } else {
                None
            };
            Refusal {
                package,
                reason,
                system: system.to_string(),
                message,
            }
        })
        .collect()
}

/// The first paragraph of Nix's last `error:` in `tail`, on one line, with
/// absolute paths replaced by `<path>` and at most [`MAX_MESSAGE_CHARS`].
fn error_message(tail: &str) -> Option<String> {
    let lines: Vec<&str> = tail.lines().collect();
    let start = lines.iter().rposition(|l| l.starts_with("error:"))?;
    let mut words = Vec::new();
    for (i, line) in lines[start..].iter().enumerate() {
        let line = if i == 0 {
            line.trim_start_matches("error:")
        } else {
            line
        };
        let line = line.trim();
        if line.is_empty() && i > 0 || line.starts_with("(use '--show-trace'") {
            break;
        }
        words.extend(line.split_whitespace().map(|word| {
            if word.starts_with('/') {
                "<path>"
            } else {
                word
            }
        }));
    }
    let text = words.join(" ");
    if text.is_empty() {
        return None;
    }
    Some(match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn markers(lines: &[&str]) -> Markers {
        let mut markers = Markers::default();
        for line in lines {
            markers.offer(line);
        }
        markers
    }

    #[test]
    fn refused_lines_become_refusals_in_order() {
        let m = markers(&[
            "trace: nixery-evaluating \"nope\"",
            "trace: warning: something else",
            "trace: nixery-evaluating \"1password\"",
            "trace: nixery-evaluated",
            "trace: nixery-refused {\"name\":\"nope\",\"reason\":\"not_found\"}",
            "trace: nixery-refused {\"name\":\"1password\",\"reason\":\"unfree\"}",
        ]);
        let got = refusals(&m, "error: nixery: packages refused\n", "x86_64-linux");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].package, "nope");
        assert_eq!(got[0].reason, RefusalReason::NotFound);
        assert_eq!(got[0].message, None);
        assert_eq!(got[1].reason, RefusalReason::Unfree);
        assert!(got[1].to_string().contains("NIXERY_ALLOW_UNFREE"));
    }

    #[test]
    fn the_error_message_goes_to_the_first_throwing_refusal() {
        let m = markers(&[
            "trace: nixery-refused {\"name\":\"lib\",\"reason\":\"not_a_derivation\"}",
            "trace: nixery-refused {\"name\":\"acorn\",\"reason\":\"throws\"}",
            "trace: nixery-refused {\"name\":\"other\",\"reason\":\"throws\"}",
        ]);
        let tail = "some build log\nerror: acorn has been removed as the upstream\n       project was archived\n(use '--show-trace' to show detailed location information)\n";
        let got = refusals(&m, tail, "x86_64-linux");
        assert_eq!(got[0].message, None);
        assert_eq!(
            got[1].message.as_deref(),
            Some("acorn has been removed as the upstream project was archived")
        );
        assert_eq!(got[2].message, None);
        assert_eq!(
            got[1].to_string(),
            "package 'acorn' cannot be used (removed, or it throws when evaluated): \
             acorn has been removed as the upstream project was archived"
        );
    }

    #[test]
    fn an_uncatchable_error_is_blamed_on_the_name_being_evaluated() {
        let m = markers(&[
            "trace: nixery-evaluating \"hello\"",
            "trace: nixery-evaluating \"type-error\"",
        ]);
        let tail =
            "error: cannot add a string to an integer\n\n       at /srv/pkgs/default.nix:3:5:\n";
        let got = refusals(&m, tail, "x86_64-linux");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].package, "type-error");
        assert_eq!(got[0].reason, RefusalReason::EvalError);
        assert_eq!(
            got[0].message.as_deref(),
            Some("cannot add a string to an integer")
        );
    }

    #[test]
    fn failures_after_evaluation_are_not_refusals() {
        let m = markers(&[
            "trace: nixery-evaluating \"failing\"",
            "trace: nixery-evaluated",
        ]);
        assert!(refusals(&m, "error: builder for 'x.drv' failed", "x86_64-linux").is_empty());
        assert!(refusals(&Markers::default(), "error: set throws", "x86_64-linux").is_empty());
    }

    #[test]
    fn messages_lose_paths_and_length() {
        let tail = format!(
            "error: Package ‘grub4dos’ in /nix/store/abc-source/pkgs/x.nix:47 is marked as broken {}",
            "word ".repeat(400)
        );
        let message = error_message(&tail).unwrap();
        assert!(
            message.starts_with("Package ‘grub4dos’ in <path> is marked"),
            "{message}"
        );
        assert!(!message.contains("/nix/store"));
        assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn unknown_reasons_and_bad_json_are_ignored() {
        let m = markers(&[
            "trace: nixery-refused {\"name\":\"x\",\"reason\":\"strange\"}",
            "trace: nixery-refused {\"name\":",
        ]);
        assert!(refusals(&m, "", "x86_64-linux").is_empty());
    }
}
