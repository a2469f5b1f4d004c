//! The controller's side of notices: which channels a transition's notices
//! go to (recorded with the transition), and the dispatcher task that sends
//! due deliveries through `crate::notify` and records every outcome.

use super::{now_ms, Controller, LiveEvent};
use crate::notify::{ATTEMPT_TIMEOUT, LEASE_MS, MAX_ATTEMPTS};
use gantry_core::{Deployment, Event, Millis};
use gantry_store::{Delivery, Outgoing};
use std::sync::Arc;
use std::time::Duration;

impl Controller {
    /// The notices a transition gives, each with the channels that want it.
    /// They are recorded with the transition, so a crash loses none.
    pub(crate) fn outbox(
        &self,
        event: &Event,
        before: &Deployment,
        after: &Deployment,
        now: Millis,
    ) -> Vec<Outgoing> {
        gantry_core::notify::notices(event, before, after, now)
            .into_iter()
            .map(|notice| Outgoing {
                channels: self
                    .config
                    .notify
                    .iter()
                    .filter(|c| c.events.contains(&notice.kind))
                    .filter(|c| c.environments.is_empty() || c.environments.contains(&after.env))
                    .map(|c| c.name.clone())
                    .collect(),
                notice,
            })
            .collect()
    }

    /// After the transition is recorded: live views hear the notices, and the
    /// dispatcher wakes for the queued deliveries.
    pub(crate) fn announced(&self, outbox: Vec<Outgoing>) {
        let queued = outbox.iter().any(|o| !o.channels.is_empty());
        for o in outbox {
            let _ = self.events.send(LiveEvent::Notice(o.notice));
        }
        if queued {
            self.dispatch.notify_one();
        }
    }

    /// Sends due deliveries until the controller goes away.
    pub fn spawn_notifier(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        self.spawn_led(async move {
            loop {
                let Some(c) = this.upgrade() else { return };
                let now = now_ms();
                match c.store.due_deliveries(now, 32) {
                    Ok(due) => {
                        for d in due {
                            // Lease it, then attempt it apart from the others.
                            let leased = c.store.update_delivery(
                                d.id,
                                "pending",
                                d.attempts,
                                now + LEASE_MS,
                                d.last_error.as_deref(),
                                now,
                            );
                            match leased {
                                Ok(()) => {
                                    c.spawn_led(c.clone().attempt(d));
                                }
                                // Another controller leads: it sends them.
                                Err(e) if c.lost_office(&e) => return,
                                Err(e) => {
                                    tracing::error!(error = %e, "cannot lease a notification")
                                }
                            }
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot read due notifications"),
                }
                let wake = c.dispatch.clone();
                drop(c);
                let _ = tokio::time::timeout(Duration::from_millis(250), wake.notified()).await;
            }
        });
    }

    async fn attempt(self: Arc<Self>, d: Delivery) {
        let Some(channel) = self.config.notify.iter().find(|c| c.name == d.channel) else {
            let _ = self.store.update_delivery(
                d.id,
                "failed",
                d.attempts,
                0,
                Some("the channel is no longer configured"),
                now_ms(),
            );
            return;
        };
        if self.acting_epoch().is_none() {
            return; // Leased, so the next leader sends it once the lease ends.
        }
        let result = match tokio::time::timeout(
            ATTEMPT_TIMEOUT,
            crate::notify::send(&self.http, &self.config.service.name, channel, &d),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {}s", ATTEMPT_TIMEOUT.as_secs())),
        };
        let attempts = d.attempts + 1;
        let now = now_ms();
        let outcome = match &result {
            Ok(()) => self
                .store
                .update_delivery(d.id, "delivered", attempts, now, None, now),
            Err(e) if attempts >= MAX_ATTEMPTS => {
                tracing::warn!(channel = %d.channel, error = %e, "notification given up");
                self.store
                    .update_delivery(d.id, "failed", attempts, now, Some(e), now)
            }
            Err(e) => {
                tracing::warn!(channel = %d.channel, attempt = attempts, error = %e, "notification attempt failed; will retry");
                let backoff = 1000 * (1 << (attempts - 1).min(10)) as Millis;
                self.store
                    .update_delivery(d.id, "pending", attempts, now + backoff, Some(e), now)
            }
        };
        if let Err(e) = outcome {
            tracing::error!(error = %e, "cannot record a notification attempt");
        }
        self.dispatch.notify_one();
    }
}
