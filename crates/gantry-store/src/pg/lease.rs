//! The lease, the heartbeats and the fence on PostgreSQL (the protocol is
//! described in `crate::lease`). Times are `TIMESTAMPTZ` set from `now()`,
//! the database's clock, and handed out as milliseconds.

use super::*;
use crate::lease::*;
use std::time::Duration;

/// A `TIMESTAMPTZ` column as milliseconds since the Unix epoch.
fn ms(column: &str) -> String {
    format!("(EXTRACT(EPOCH FROM {column}) * 1000)::BIGINT")
}

fn lease_columns() -> String {
    format!(
        "holder, api_url, epoch, {}, {}, expires_at > now(), {}",
        ms("acquired_at"),
        ms("expires_at"),
        ms("now()")
    )
}

/// The lease row and the database's clock.
fn lease_from_row(r: &postgres::Row) -> Result<(LeaseRecord, Millis)> {
    Ok((
        LeaseRecord {
            holder: r.try_get(0)?,
            api_url: r.try_get(1)?,
            epoch: r.try_get::<_, i64>(2)? as u64,
            acquired_at: r.try_get(3)?,
            expires_at: Some(r.try_get(4)?),
            live: r.try_get(5)?,
        },
        r.try_get(6)?,
    ))
}

/// Seconds, as `make_interval` takes them.
fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The first statement of a leader-only write: locks the lease row for
/// share (taking the lease waits for this transaction, and this one for a
/// takeover in flight) and refuses if the epoch is no longer `epoch`.
pub(super) fn check_epoch(tx: &mut Transaction<'_>, epoch: u64) -> Result<()> {
    let row = tx.query_one(
        "SELECT epoch, holder FROM leader_lease WHERE id = 1 FOR SHARE",
        &[],
    )?;
    let current = row.try_get::<_, i64>(0)? as u64;
    if current == epoch {
        return Ok(());
    }
    let holder: String = row.try_get(1)?;
    Err(StoreError::Fenced(format!(
        "this controller led under epoch {epoch}, but controller {holder:?} leads under epoch {current} now; nothing was written"
    )))
}

impl PgStore {
    /// Runs a leader-only write in one transaction, as the fence allows:
    /// refused at once on a follower, checked against the lease's epoch
    /// first on a leader. `job` is given the epoch it writes under (`None`
    /// with the fence open).
    pub(super) fn fenced<T: Send>(
        &self,
        job: impl FnOnce(&mut Transaction<'_>, Option<i64>) -> Result<T> + Send,
    ) -> Result<T> {
        let fence = *self.fence.lock().unwrap_or_else(|p| p.into_inner());
        match fence {
            Fence::Open => self.tx(|tx| job(tx, None)),
            Fence::Follower => Err(StoreError::Fenced(
                "this controller follows: only the leader writes deployment state; nothing was written"
                    .to_owned(),
            )),
            Fence::Leader(epoch) => self.tx(move |tx| {
                check_epoch(tx, epoch)?;
                job(tx, Some(epoch as i64))
            }),
        }
    }
}

impl LeaseStore for PgStore {
    fn acquire(&self, me: &Candidate, lease: Duration) -> Result<Acquired> {
        self.tx(|tx| {
            // The row lock serialises every attempt and waits for fenced
            // writes in flight (they hold it for share).
            let row = tx.query_one(
                &format!(
                    "SELECT {} FROM leader_lease WHERE id = 1 FOR UPDATE",
                    lease_columns()
                ),
                &[],
            )?;
            let (held, now) = lease_from_row(&row)?;
            if held.live && held.holder != me.id {
                return Ok(Acquired::Held { lease: held, now });
            }
            // A new epoch even when the lease was our own: whatever this
            // controller did in an earlier term is fenced off too.
            let epoch: i64 = tx
                .query_one(
                    "INSERT INTO controller_epoch (id, epoch) VALUES (1, GREATEST($1::BIGINT, 0) + 1)
                     ON CONFLICT (id) DO UPDATE SET epoch = GREATEST(controller_epoch.epoch, $1::BIGINT) + 1
                     RETURNING epoch",
                    &[&(held.epoch as i64)],
                )?
                .try_get(0)?;
            let expires_at: Millis = tx
                .query_one(
                    &format!(
                        "UPDATE leader_lease SET holder = $1, api_url = $2, epoch = $3,
                             acquired_at = now(), expires_at = now() + make_interval(secs => $4)
                         WHERE id = 1 RETURNING {}",
                        ms("expires_at")
                    ),
                    &[&me.id, &me.api_url, &epoch, &secs(lease)],
                )?
                .try_get(0)?;
            Ok(Acquired::Leading {
                epoch: epoch as u64,
                expires_at,
            })
        })
    }

    fn renew(&self, holder: &str, epoch: u64, lease: Duration) -> Result<Option<Millis>> {
        self.tx(|tx| {
            Ok(tx
                .query_opt(
                    &format!(
                        "UPDATE leader_lease SET expires_at = now() + make_interval(secs => $3)
                         WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires_at > now()
                         RETURNING {}",
                        ms("expires_at")
                    ),
                    &[&holder, &(epoch as i64), &secs(lease)],
                )?
                .map(|r| r.try_get(0))
                .transpose()?)
        })
    }

    fn heartbeat(&self, me: &Candidate) -> Result<()> {
        self.tx(|tx| {
            tx.execute(
                "INSERT INTO controllers (id, api_url, version, started_at, last_seen)
                 VALUES ($1, $2, $3, now(), now())
                 ON CONFLICT (id) DO UPDATE SET api_url = $2, version = $3, last_seen = now()",
                &[&me.id, &me.api_url, &me.version],
            )?;
            // Controllers gone for a day are forgotten.
            tx.execute(
                "DELETE FROM controllers WHERE last_seen < now() - INTERVAL '1 day'",
                &[],
            )?;
            Ok(())
        })
    }

    fn retire(&self, me: &str, epoch: Option<u64>) -> Result<()> {
        self.tx(|tx| {
            if let Some(epoch) = epoch {
                tx.execute(
                    "UPDATE leader_lease SET expires_at = now()
                     WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires_at > now()",
                    &[&me, &(epoch as i64)],
                )?;
            }
            tx.execute("DELETE FROM controllers WHERE id = $1", &[&me])?;
            Ok(())
        })
    }

    fn cluster(&self) -> Result<ClusterSnapshot> {
        self.tx(|tx| {
            let (lease, now) = lease_from_row(&tx.query_one(
                &format!("SELECT {} FROM leader_lease WHERE id = 1", lease_columns()),
                &[],
            )?)?;
            // The row exists from the start; holder '' means never taken.
            let lease = (!lease.holder.is_empty()).then_some(lease);
            let leader = lease.as_ref().filter(|l| l.live).map(|l| l.holder.clone());
            let controllers = tx
                .query(
                    &format!(
                        "SELECT id, api_url, version, {}, {} FROM controllers ORDER BY last_seen DESC, id",
                        ms("started_at"),
                        ms("last_seen")
                    ),
                    &[],
                )?
                .iter()
                .map(|r| {
                    let id: String = r.try_get(0)?;
                    Ok(ControllerRecord {
                        leader: leader.as_deref() == Some(id.as_str()),
                        id,
                        api_url: r.try_get(1)?,
                        version: r.try_get(2)?,
                        started_at: r.try_get(3)?,
                        last_seen: r.try_get(4)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(ClusterSnapshot {
                now,
                lease,
                controllers,
            })
        })
    }

    fn set_fence(&self, fence: Fence) {
        *self.fence.lock().unwrap_or_else(|p| p.into_inner()) = fence;
    }
}

#[cfg(test)]
mod tests {
    //! Each test on a fresh database of the throwaway PostgreSQL server,
    //! every controller a store (and so connections) of its own.

    use super::*;
    use crate::suite::{new_deployment, pg_fixture};
    use std::time::Instant;

    fn controller(url: &str) -> PgStore {
        PgStore::connect(&DatabaseUrl::new(url.to_owned())).unwrap()
    }

    fn candidate(name: &str) -> Candidate {
        Candidate {
            id: name.to_owned(),
            api_url: format!("http://{name}.test:7400"),
            version: "0.1.0".to_owned(),
        }
    }

    const LEASE: Duration = Duration::from_secs(30);

    fn leading(a: Acquired) -> u64 {
        match a {
            Acquired::Leading { epoch, .. } => epoch,
            other => panic!("expected to lead, got {other:?}"),
        }
    }

    /// Polls (with a deadline) until the lease has expired on the database's clock.
    fn wait_expired(store: &PgStore) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.cluster().unwrap().lease.is_some_and(|l| l.live) {
            assert!(Instant::now() < deadline, "the lease never expired");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn the_first_controller_takes_the_lease_and_the_next_is_told_who_holds_it() {
        let Some(pg) = pg_fixture("lease_acquire") else {
            return;
        };
        let (a, b) = (controller(&pg.url), controller(&pg.url));
        assert_eq!(a.cluster().unwrap().lease, None, "never taken yet");
        let epoch = leading(a.acquire(&candidate("a"), LEASE).unwrap());
        assert!(epoch >= 1);
        assert_eq!(
            pg.store.controller_epoch().unwrap(),
            epoch,
            "one epoch counter"
        );
        match b.acquire(&candidate("b"), LEASE).unwrap() {
            Acquired::Held { lease, now } => {
                assert_eq!(
                    (lease.holder.as_str(), lease.api_url.as_str(), lease.epoch),
                    ("a", "http://a.test:7400", epoch)
                );
                assert!(lease.live);
                let left = lease.expires_at.unwrap() - now;
                assert!((29_000..=30_000).contains(&left), "{left} ms left");
            }
            other => panic!("b took a live lease: {other:?}"),
        }
        // Taking it again as its holder opens a new term under a new epoch.
        let again = leading(a.acquire(&candidate("a"), LEASE).unwrap());
        assert_eq!(again, epoch + 1);
    }

    #[test]
    fn only_the_holder_under_its_epoch_renews_and_only_before_expiry() {
        let Some(pg) = pg_fixture("lease_renew") else {
            return;
        };
        let a = controller(&pg.url);
        let epoch = match a.acquire(&candidate("a"), Duration::from_secs(2)).unwrap() {
            Acquired::Leading { epoch, expires_at } => {
                let renewed = a.renew("a", epoch, LEASE).unwrap().unwrap();
                assert!(renewed >= expires_at + 27_000, "{renewed} vs {expires_at}");
                epoch
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(a.renew("b", epoch, LEASE).unwrap(), None, "not the holder");
        assert_eq!(
            a.renew("a", epoch + 1, LEASE).unwrap(),
            None,
            "another epoch"
        );
        // Expired, the holder itself can no longer renew: it must take the
        // lease again, under a new epoch.
        a.renew("a", epoch, Duration::from_millis(200))
            .unwrap()
            .unwrap();
        wait_expired(&a);
        assert_eq!(a.renew("a", epoch, LEASE).unwrap(), None, "expired");
    }

    #[test]
    fn an_expired_lease_is_taken_over_under_a_higher_epoch_and_the_old_holder_cannot_renew() {
        let Some(pg) = pg_fixture("lease_takeover") else {
            return;
        };
        let (a, b) = (controller(&pg.url), controller(&pg.url));
        let first = leading(
            a.acquire(&candidate("a"), Duration::from_millis(300))
                .unwrap(),
        );
        assert!(matches!(
            b.acquire(&candidate("b"), LEASE).unwrap(),
            Acquired::Held { .. }
        ));
        wait_expired(&b);
        let second = leading(b.acquire(&candidate("b"), LEASE).unwrap());
        assert!(second > first, "{second} > {first}");
        assert_eq!(a.renew("a", first, LEASE).unwrap(), None);
        let lease = a.cluster().unwrap().lease.unwrap();
        assert_eq!((lease.holder.as_str(), lease.epoch), ("b", second));
        // The epoch never moves back, even by hand.
        let err = a
            .execute_raw("UPDATE leader_lease SET epoch = 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("the lease epoch never moves back"), "{err}");
    }

    #[test]
    fn of_many_controllers_racing_for_an_expired_lease_exactly_one_leads() {
        let Some(pg) = pg_fixture("lease_race") else {
            return;
        };
        let outcomes: Vec<Acquired> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|n| {
                    let url = pg.url.clone();
                    s.spawn(move || {
                        controller(&url)
                            .acquire(&candidate(&format!("c{n}")), LEASE)
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let leaders: Vec<&Acquired> = outcomes
            .iter()
            .filter(|o| matches!(o, Acquired::Leading { .. }))
            .collect();
        assert_eq!(leaders.len(), 1, "{outcomes:?}");
        let holder = pg.store.cluster().unwrap().lease.unwrap().holder;
        for o in &outcomes {
            if let Acquired::Held { lease, .. } = o {
                assert_eq!(lease.holder, holder);
            }
        }
    }

    #[test]
    fn a_write_under_a_stale_epoch_is_refused_and_leaves_nothing() {
        let Some(pg) = pg_fixture("lease_fence") else {
            return;
        };
        let env: EnvName = "production".parse().unwrap();
        let (a, b) = (controller(&pg.url), controller(&pg.url));
        let old = leading(
            a.acquire(&candidate("a"), Duration::from_millis(300))
                .unwrap(),
        );
        a.set_fence(Fence::Leader(old));
        let d = a
            .create_deployment(&env, &mut |id| new_deployment(id, "production", "1.0.0"))
            .unwrap();
        let t = gantry_core::step(&d, &Event::Created, 100);
        a.record(&Event::Created, &t, 100, &[]).unwrap();
        let events_before = a.events(d.id).unwrap().len();
        let epochs = |id: DeploymentId| -> Vec<Option<i64>> {
            let mut c = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
            c.query(
                "SELECT epoch FROM events WHERE deployment = $1 ORDER BY seq",
                &[&id],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
        };
        assert_eq!(
            epochs(d.id),
            [Some(old as i64)],
            "each event names its term"
        );

        // a pauses past its lease; b takes over.
        wait_expired(&b);
        let new = leading(b.acquire(&candidate("b"), LEASE).unwrap());
        b.set_fence(Fence::Leader(new));

        // Every leader-only write of a's is refused, naming the new leader.
        let next = gantry_core::step(&t.deployment, &Event::Tick, 200);
        let err = a.record(&Event::Tick, &next, 200, &[]).unwrap_err();
        match &err {
            StoreError::Fenced(why) => {
                assert!(
                    why.contains(&format!("led under epoch {old}"))
                        && why.contains(&format!("\"b\" leads under epoch {new}")),
                    "{why}"
                )
            }
            other => panic!("expected fenced, got {other}"),
        }
        assert!(matches!(
            a.create_deployment(&"staging".parse().unwrap(), &mut |id| {
                new_deployment(id, "staging", "1.0.0")
            }),
            Err(StoreError::Fenced(_))
        ));
        assert!(matches!(
            a.prune_deployments(i64::MAX),
            Err(StoreError::Fenced(_))
        ));
        assert!(matches!(
            a.prune_audit(i64::MAX, 1),
            Err(StoreError::Fenced(_))
        ));
        assert!(matches!(
            a.update_delivery(1, "delivered", 1, 0, None, 1),
            Err(StoreError::Fenced(_))
        ));
        // Nothing of them landed.
        assert_eq!(b.events(d.id).unwrap().len(), events_before);
        assert_eq!(b.deployment(d.id).unwrap().unwrap(), t.deployment);
        assert!(b
            .deployments(Some(&"staging".parse().unwrap()), 10)
            .unwrap()
            .is_empty());

        // The new leader writes; a follower writes nothing, without asking.
        b.record(&Event::Tick, &next, 300, &[]).unwrap();
        assert_eq!(b.events(d.id).unwrap().len(), events_before + 1);
        assert_eq!(epochs(d.id), [Some(old as i64), Some(new as i64)]);
        a.set_fence(Fence::Follower);
        assert!(matches!(
            a.record(&Event::Tick, &next, 400, &[]),
            Err(StoreError::Fenced(why)) if why.contains("this controller follows")
        ));
        // Reads and other controllers' ordinary writes are not fenced.
        assert_eq!(a.deployment(d.id).unwrap().unwrap().id, d.id);
        a.append_audit(crate::AuditEntry {
            at: 1,
            actor: "admin".into(),
            action: "POST /api/v1/users".into(),
            subject: "user x".into(),
            outcome: "done 201".into(),
            detail: "{}".into(),
        })
        .unwrap();
    }

    #[test]
    fn taking_the_lease_waits_for_a_fenced_write_in_flight() {
        let Some(pg) = pg_fixture("lease_waits") else {
            return;
        };
        let a = controller(&pg.url);
        let old = leading(
            a.acquire(&candidate("a"), Duration::from_millis(200))
                .unwrap(),
        );
        wait_expired(&a);
        // A leader's write in flight: its transaction holds the lease row for share.
        let mut writer = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
        let mut tx = writer.transaction().unwrap();
        check_epoch(&mut tx, old).unwrap();
        let url = pg.url.clone();
        let (done_tx, done) = std::sync::mpsc::channel();
        let taker = std::thread::spawn(move || {
            let b = controller(&url);
            let got = b.acquire(&candidate("b"), LEASE).unwrap();
            let _ = done_tx.send(());
            got
        });
        // While the write is open, the takeover waits (a window, not a sleep:
        // it must not finish at any point of it).
        assert!(
            done.recv_timeout(Duration::from_millis(500)).is_err(),
            "the lease was taken under a write in flight"
        );
        tx.commit().unwrap();
        let new = leading(taker.join().unwrap());
        assert!(new > old);
        // A write that starts after the takeover sees the new epoch.
        let mut tx = writer.transaction().unwrap();
        assert!(matches!(
            check_epoch(&mut tx, old),
            Err(StoreError::Fenced(_))
        ));
    }

    #[test]
    fn a_retiring_leader_frees_the_lease_at_once_and_heartbeats_list_the_controllers() {
        let Some(pg) = pg_fixture("lease_retire") else {
            return;
        };
        let (a, b) = (controller(&pg.url), controller(&pg.url));
        a.heartbeat(&candidate("a")).unwrap();
        b.heartbeat(&candidate("b")).unwrap();
        let epoch = leading(a.acquire(&candidate("a"), LEASE).unwrap());
        let seen = a.cluster().unwrap();
        assert_eq!(seen.controllers.len(), 2);
        let by_id = |id: &str| {
            seen.controllers
                .iter()
                .find(|c| c.id == id)
                .unwrap()
                .clone()
        };
        assert!(by_id("a").leader && !by_id("b").leader);
        assert_eq!(by_id("b").api_url, "http://b.test:7400");
        assert!(by_id("a").last_seen <= seen.now);

        a.retire("a", Some(epoch)).unwrap();
        let taken = leading(b.acquire(&candidate("b"), LEASE).unwrap());
        assert!(taken > epoch);
        let seen = b.cluster().unwrap();
        assert_eq!(
            seen.controllers
                .iter()
                .map(|c| (c.id.as_str(), c.leader))
                .collect::<Vec<_>>(),
            [("b", true)]
        );
    }
}
