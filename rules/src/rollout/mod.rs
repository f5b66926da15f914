//! Progressive delivery, pure: a rollout's plan and its progression ([`plan`]: Argo's
//! steps and outcomes) and the judges of its analysis ([`judge`]: thresholds, Mann-Whitney
//! with Hodges–Lehmann, a binomial test on errors) and its webhooks ([`webhook`]: Flagger's
//! types and body), and the serial pool release ([`serial`]: one server at a time). The runner that applies steps through
//! the control plane and feeds analysis from the query tier's signals lives outside this
//! crate.

pub mod judge;
pub mod plan;
pub mod serial;
pub mod spec;
pub mod webhook;

pub use judge::{combine, Counts, ErrorTest, LatencyTest, Limits, Verdict};
pub use plan::{check_steps, Action, Event, Phase, Progress, Step};
pub use serial::{SerialDoc, SerialPhase, SerialSpec, Stage};
pub use spec::{apply_step, AnalysisSpec, RolloutDoc, RolloutSpec, UserMetric};
pub use webhook::{HookType, WebhookSpec};
