//! The one error type of the rules crate.

/// Why a rule set was refused. Messages name the route, the rule and the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// A field of a rule or route holds a value that cannot work.
    #[error("route `{route}`{}: field `{field}`: {reason}", rule.as_ref().map(|r| format!(" rule `{r}`")).unwrap_or_default())]
    Invalid {
        route: String,
        rule: Option<String>,
        field: &'static str,
        reason: String,
    },
    /// The rule file is not valid TOML or has unknown/missing fields.
    #[error("rule file: {0}")]
    Parse(#[from] toml::de::Error),
    /// A referenced tenant file could not be read.
    #[error("route `{route}` rule `{rule}`: tenants_file `{path}`: {reason}")]
    TenantFile {
        route: String,
        rule: String,
        path: String,
        reason: String,
    },
}

impl RuleError {
    pub(crate) fn invalid(
        route: &str,
        rule: Option<&str>,
        field: &'static str,
        reason: impl Into<String>,
    ) -> Self {
        RuleError::Invalid {
            route: route.to_string(),
            rule: rule.map(str::to_string),
            field,
            reason: reason.into(),
        }
    }
}
