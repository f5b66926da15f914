//! The state machine of one alarm label set, with Prometheus' semantics:
//!
//! ```text
//!            true, for = 0                      false, keep_firing_for elapsed
//! inactive ──────────────────────────▶ firing ─────────────────────────────▶ resolved
//!    │ true, for > 0            ▲                                              │
//!    ▼                          │ true for `for`                               │ true again
//! pending ──────────────────────┘                                              ▼
//!    │ false                                                     pending / firing (a new episode)
//!    ▼
//! inactive
//! ```
//!
//! Time is passed in (µs since the epoch); nothing here reads a clock.

use serde::{Deserialize, Serialize};

/// Where a label set is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Inactive,
    Pending,
    Firing,
    Resolved,
}

impl State {
    /// The name stored in the `alarms` table.
    pub fn name(self) -> &'static str {
        match self {
            State::Inactive => "inactive",
            State::Pending => "pending",
            State::Firing => "firing",
            State::Resolved => "resolved",
        }
    }

    /// Inverse of [`State::name`].
    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "inactive" => State::Inactive,
            "pending" => State::Pending,
            "firing" => State::Firing,
            "resolved" => State::Resolved,
            _ => return None,
        })
    }
}

/// The timing of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub for_us: i64,
    pub keep_firing_for_us: i64,
}

/// One label set's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tracker {
    pub state: State,
    /// When the current episode began (pending or firing since), µs.
    pub active_since: i64,
    /// When it began firing (0 if it has not).
    pub fired_at: i64,
    /// When it resolved (0 if it has not).
    pub resolved_at: i64,
    /// The last time the condition held.
    pub last_true: i64,
    /// The last value seen.
    pub value: f64,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            state: State::Inactive,
            active_since: 0,
            fired_at: 0,
            resolved_at: 0,
            last_true: 0,
            value: 0.0,
        }
    }
}

impl Tracker {
    /// Restore a tracker from its last stored transition (after a restart): `for` keeps
    /// counting from `active_since`, and a firing label set stays firing without a second
    /// "firing".
    pub fn restore(state: State, active_since: i64, at: i64, value: f64) -> Tracker {
        Tracker {
            state,
            active_since,
            fired_at: if state == State::Firing { at } else { 0 },
            resolved_at: if state == State::Resolved { at } else { 0 },
            last_true: at,
            value,
        }
    }

    /// Feed one evaluation: whether the condition held at `now` (with the value, if the
    /// series was present). Returns the new state if it changed.
    pub fn step(&mut self, now: i64, holds: bool, value: Option<f64>, t: Timing) -> Option<State> {
        if let Some(v) = value {
            self.value = v;
        }
        if holds {
            self.last_true = now;
        }
        let next = match (self.state, holds) {
            (State::Inactive | State::Resolved, true) => {
                self.active_since = now;
                self.resolved_at = 0;
                if t.for_us <= 0 {
                    State::Firing
                } else {
                    State::Pending
                }
            }
            (State::Pending, true) if now - self.active_since >= t.for_us => State::Firing,
            (State::Pending, false) => State::Inactive,
            (State::Firing, false) if now - self.last_true >= t.keep_firing_for_us => {
                State::Resolved
            }
            (s, _) => s,
        };
        if next == self.state {
            return None;
        }
        match next {
            State::Firing => self.fired_at = now,
            State::Resolved => self.resolved_at = now,
            _ => {}
        }
        self.state = next;
        Some(next)
    }

    /// Whether the tracker can be forgotten (nothing to notify, nothing pending).
    pub fn idle(&self, now: i64, keep_resolved_us: i64) -> bool {
        match self.state {
            State::Inactive => true,
            State::Resolved => now - self.resolved_at >= keep_resolved_us,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    fn run(t: Timing, steps: &[(i64, bool)]) -> Vec<(i64, State)> {
        let mut tr = Tracker::default();
        steps
            .iter()
            .filter_map(|&(at, h)| tr.step(at * S, h, Some(1.0), t).map(|s| (at, s)))
            .collect()
    }

    #[test]
    fn for_zero_fires_at_once_and_resolves_when_false() {
        let t = Timing {
            for_us: 0,
            keep_firing_for_us: 0,
        };
        assert_eq!(
            run(
                t,
                &[
                    (0, false),
                    (1, true),
                    (2, true),
                    (3, false),
                    (4, false),
                    (5, true)
                ]
            ),
            [(1, State::Firing), (3, State::Resolved), (5, State::Firing)]
        );
    }

    #[test]
    fn pending_waits_for_and_a_blip_resets_it() {
        let t = Timing {
            for_us: 10 * S,
            keep_firing_for_us: 0,
        };
        assert_eq!(
            run(
                t,
                &[
                    (0, true),
                    (5, true),
                    (6, false),
                    (7, true),
                    (16, true),
                    (17, true)
                ]
            ),
            [
                (0, State::Pending),
                (6, State::Inactive),
                (7, State::Pending),
                (17, State::Firing)
            ]
        );
        // exactly `for` later is enough
        assert_eq!(
            run(t, &[(0, true), (10, true)]),
            [(0, State::Pending), (10, State::Firing)]
        );
    }

    #[test]
    fn keep_firing_for_bridges_gaps() {
        let t = Timing {
            for_us: 0,
            keep_firing_for_us: 5 * S,
        };
        assert_eq!(
            run(
                t,
                &[
                    (0, true),
                    (1, false),
                    (4, false),
                    (5, true),
                    (9, false),
                    (10, false)
                ]
            ),
            [(0, State::Firing), (10, State::Resolved)]
        );
    }

    #[test]
    fn restored_state_keeps_its_clock() {
        let t = Timing {
            for_us: 10 * S,
            keep_firing_for_us: 0,
        };
        let mut tr = Tracker::restore(State::Pending, 0, 4 * S, 1.0);
        assert_eq!(tr.step(8 * S, true, None, t), None);
        assert_eq!(tr.step(10 * S, true, None, t), Some(State::Firing));
        let mut f = Tracker::restore(State::Firing, 0, 10 * S, 1.0);
        assert_eq!(f.step(11 * S, true, None, t), None, "no second firing");
        assert!(!f.idle(11 * S, 0) && Tracker::default().idle(0, 0));
    }
}
