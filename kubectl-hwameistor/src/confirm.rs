//! Confirmation of destructive actions: prompt on a terminal, `--yes` to skip, and refuse
//! (never assume) when nobody is there to answer. An action that throws data away for good
//! asks for a typed answer instead of y/N: the name of what is lost.

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

    /// Like [`Confirmation::confirm`], but the answer must be `expected` typed out (e.g. the
    /// name of the node whose data is discarded), so the go-ahead is given about what is
    /// lost rather than by habit. `--yes` skips it as it skips every confirmation; without
    /// a terminal and without `--yes` it refuses.
    pub fn confirm_typed(
        self,
        action: &str,
        details: &str,
        expected: &str,
    ) -> Result<(), AdminError> {
        match self {
            Confirmation::AssumeYes | Confirmation::Answer(_) | Confirmation::Refuse => {
                self.confirm(action, details)
            }
            Confirmation::Prompt => {
                if !details.is_empty() {
                    eprintln!("{}", details.trim_end());
                }
                let typed: String = dialoguer::Input::new()
                    .with_prompt(format!("{action}? Type {expected} to confirm"))
                    .allow_empty(true)
                    .interact_text()
                    .map_err(|e| AdminError::Io(std::io::Error::other(e.to_string())))?;
                check_typed(action, &typed, expected)
            }
        }
    }
}

/// Whether a typed answer confirms: exactly `expected`, surrounding blanks aside.
pub fn check_typed(action: &str, typed: &str, expected: &str) -> Result<(), AdminError> {
    if typed.trim() == expected {
        Ok(())
    } else {
        Err(AdminError::TypedMismatch {
            action: action.to_string(),
            typed: typed.trim().to_string(),
            expected: expected.to_string(),
        })
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
    fn typed_answers_must_name_what_is_lost() {
        assert!(check_typed("discard", " node-b\n", "node-b").is_ok());
        let e = check_typed("discard the data of node-b", "node-a", "node-b").unwrap_err();
        assert_eq!(
            e.to_string(),
            "aborted: discard the data of node-b was not confirmed (typed \"node-a\", not \"node-b\"); nothing was changed"
        );
        assert!(check_typed("x", "", "node-b").is_err());
        // --yes and a missing terminal behave as for every confirmation.
        assert!(Confirmation::AssumeYes.confirm_typed("x", "", "n").is_ok());
        assert!(matches!(
            Confirmation::Refuse.confirm_typed("x", "", "n"),
            Err(AdminError::ConfirmationRequired { .. })
        ));
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
