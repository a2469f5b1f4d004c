//! Which of a person's requests (promote, pause, resume, abort) a
//! deployment accepts in its phase. The controller checks this before it
//! hands the request to the running deployment, so a refusal is an answer
//! to the caller rather than a silent no-op in the machine.

use super::{Deployment, Event, Phase, RollStage};

/// Why a deployment does not take a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestRefusal {
    /// The deployment has finished; nothing acts on it any more.
    Finished,
    /// Promote acts on a canary step, on smoke checks waiting for a
    /// decision, or ends a watch; pause and resume act on canary steps.
    NotInThisPhase,
}

impl Deployment {
    /// Whether this deployment takes `request` now. Abort (and any other
    /// event) is taken in every unfinished phase.
    pub fn accepts(&self, request: &Event) -> Result<(), RequestRefusal> {
        if self.phase.is_terminal() {
            return Err(RequestRefusal::Finished);
        }
        let held_smoke = self.smoke.as_ref().is_some_and(|s| s.held)
            && (self.phase == Phase::Smoke
                || self
                    .rolling
                    .as_ref()
                    .is_some_and(|r| r.stage == RollStage::Smoke));
        let allowed = match request {
            Event::PromoteRequested { .. } => {
                matches!(self.phase, Phase::Canary | Phase::Watching) || held_smoke
            }
            Event::PauseRequested { .. } | Event::ResumeRequested { .. } => {
                self.phase == Phase::Canary
            }
            _ => true,
        };
        if allowed {
            Ok(())
        } else {
            Err(RequestRefusal::NotInThisPhase)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{DeploySettings, DeploymentKind, HealthSettings, SmokeState};
    use crate::Version;

    fn in_phase(phase: Phase) -> Deployment {
        let mut d = Deployment::new(
            crate::NewDeployment {
                id: 7,
                env: "production".parse().unwrap(),
                kind: DeploymentKind::Deploy,
                version: Version::new(1, 1, 0),
                previous_version: Some(Version::new(1, 0, 0)),
                old_instances: Vec::new(),
                settings: DeploySettings {
                    instances: 1,
                    health: HealthSettings {
                        interval_ms: 1000,
                        startup_interval_ms: 50,
                        failure_threshold: 3,
                        start_timeout_ms: 5000,
                    },
                    bake_ms: 0,
                    strategy: crate::machine::StrategySettings::BlueGreen,
                    smoke: None,
                    freezes: Vec::new(),
                    fleet: None,
                    watch: None,
                    resources: Default::default(),
                    hooks: Vec::new(),
                    migrations: Vec::new(),
                },
                requested_by: "alice".into(),
            },
            0,
        );
        d.phase = phase;
        d
    }

    fn promote() -> Event {
        Event::PromoteRequested { by: "bob".into() }
    }
    fn pause() -> Event {
        Event::PauseRequested { by: "bob".into() }
    }
    fn resume() -> Event {
        Event::ResumeRequested { by: "bob".into() }
    }
    fn abort() -> Event {
        Event::AbortRequested { by: "bob".into() }
    }

    #[test]
    fn a_canary_step_takes_promote_pause_resume_and_abort() {
        let d = in_phase(Phase::Canary);
        for e in [promote(), pause(), resume(), abort()] {
            assert_eq!(d.accepts(&e), Ok(()), "{e:?}");
        }
    }

    #[test]
    fn outside_a_canary_only_abort_is_taken() {
        for phase in [
            Phase::Starting,
            Phase::Verifying,
            Phase::Baking,
            Phase::Smoke,
        ] {
            let d = in_phase(phase);
            assert_eq!(d.accepts(&abort()), Ok(()), "{phase:?}");
            for e in [promote(), pause(), resume()] {
                assert_eq!(
                    d.accepts(&e),
                    Err(RequestRefusal::NotInThisPhase),
                    "{phase:?} {e:?}"
                );
            }
        }
    }

    #[test]
    fn held_smoke_checks_take_promote_but_not_pause() {
        let mut d = in_phase(Phase::Smoke);
        d.smoke = Some(SmokeState {
            results: Vec::new(),
            held: true,
            done: false,
        });
        assert_eq!(d.accepts(&promote()), Ok(()));
        assert_eq!(d.accepts(&pause()), Err(RequestRefusal::NotInThisPhase));
    }

    #[test]
    fn a_finished_deployment_takes_nothing() {
        for phase in [Phase::Succeeded, Phase::RolledBack, Phase::Failed] {
            let d = in_phase(phase);
            for e in [promote(), pause(), resume(), abort()] {
                assert_eq!(d.accepts(&e), Err(RequestRefusal::Finished), "{phase:?}");
            }
        }
    }
}
