//! Confirmation of destructive actions: prompt on a terminal, `--yes` to skip, and refuse
//! (never assume) when nobody is there to answer.

use crate::errors::AdminError;
use std::io::IsTerminal;

/// How a destructive action gets its go-ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// `--yes` was given.
    AssumeYes,
    /// Ask on the terminal (stdin is a TTY).
    Prompt,
    /// No terminal and no `--yes`: refuse with an error telling to pass --yes.
    Refuse,
    /// A fixed answer, for tests and for callers that asked by other means.
    Answer(bool),
}

impl Confirmation {
    /// The policy for a command run by a person or a script.
    pub fn from_flags(yes: bool) -> Self {
        if yes {
            Confirmation::AssumeYes
        } else if std::io::stdin().is_terminal() {
            Confirmation::Prompt
        } else {
            Confirmation::Refuse
        }
    }

    /// Asks to go ahead with `action` (e.g. "claim 2 disks of node-a"); `details` is shown
    /// first so the question is asked about something the user has just read.
    pub fn confirm(self, action: &str, details: &str) -> Result<(), AdminError> {
        let yes = match self {
            Confirmation::AssumeYes => true,
            Confirmation::Answer(a) => a,
            Confirmation::Refuse => {
                return Err(AdminError::ConfirmationRequired {
                    action: action.to_string(),
                })
            }
            Confirmation::Prompt => {
                if !details.is_empty() {
                    eprintln!("{}", details.trim_end());
                }
                dialoguer::Confirm::new()
                    .with_prompt(format!("{action}?"))
                    .default(false)
                    .interact()
                    .map_err(|e| AdminError::Io(std::io::Error::other(e.to_string())))?
            }
        };
        if yes {
            Ok(())
        } else {
            Err(AdminError::NotConfirmed {
                action: action.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_without_terminal_and_names_the_flag() {
        let e = Confirmation::Refuse.confirm("delete CRDs", "").unwrap_err();
        assert_eq!(
            e.to_string(),
            "delete CRDs needs confirmation, but stdin is not a terminal: pass --yes to proceed"
        );
    }

    #[test]
    fn fixed_answers() {
        assert!(Confirmation::AssumeYes.confirm("x", "").is_ok());
        assert!(matches!(
            Confirmation::Answer(false).confirm("x", ""),
            Err(AdminError::NotConfirmed { .. })
        ));
    }
}
