//! `external`: a value rotated at a third party (an API key at a provider). Tessera
//! cannot rotate it; the scheduler reminds (warning at 80 % of the cadence, overdue past
//! it) and `secrets put NAME` records the operator's new value.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Created, Rotator, RotatorError, VersionView};

/// Most bytes of the operator's instructions.
const MAX_INSTRUCTIONS: usize = 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalConfig {
    /// Where the operator rotates it (a URL or runbook reference), shown in reminders.
    pub instructions: String,
}

impl ExternalConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.instructions.len() > MAX_INSTRUCTIONS {
            return Err(format!(
                "instructions: longer than {MAX_INSTRUCTIONS} bytes"
            ));
        }
        Ok(())
    }
}

pub struct ExternalRotator;

#[async_trait]
impl Rotator for ExternalRotator {
    fn rotates(&self) -> bool {
        false
    }

    async fn create(&self, _: Option<VersionView<'_>>) -> Result<Created, RotatorError> {
        Err(RotatorError::Unsupported(
            "external secrets are put, not rotated",
        ))
    }

    async fn set(&self, _: VersionView<'_>) -> Result<(), RotatorError> {
        Err(RotatorError::Unsupported(
            "external secrets are put, not rotated",
        ))
    }

    async fn test(&self, _: VersionView<'_>) -> Result<(), RotatorError> {
        Err(RotatorError::Unsupported(
            "external secrets are put, not rotated",
        ))
    }

    async fn finish(
        &self,
        _: VersionView<'_>,
        _: Option<VersionView<'_>>,
        _: Option<VersionView<'_>>,
    ) -> Result<(), RotatorError> {
        Ok(())
    }

    async fn discard(
        &self,
        _: VersionView<'_>,
        _: Option<VersionView<'_>>,
    ) -> Result<(), RotatorError> {
        Ok(())
    }

    async fn reinstate(&self, _: VersionView<'_>) -> Result<(), RotatorError> {
        // The old value's validity is the third party's business; rolling back only
        // changes which value Tessera hands out.
        Ok(())
    }
}
