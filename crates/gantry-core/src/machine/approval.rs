//! Approvals, lead times and freezes before a deployment may start.

use super::*;

/// What the deployment still waits for, and until when if time alone
/// ends the wait; `None` when it may start.
pub(super) fn waits(d: &Deployment, now: Millis) -> Option<(String, Option<Millis>)> {
    let c = d.change.as_ref()?;
    let approved = c.approvals.iter().filter(|a| a.approved).count() as u32;
    if approved < c.required_before {
        return Some((
            format!(
                "{} of {} approval(s) from the approver role",
                approved, c.required_before
            ),
            c.start_after.filter(|&at| at > now),
        ));
    }
    if let Some(at) = c.start_after.filter(|&at| at > now) {
        let why = if c.scheduled_at == Some(at) {
            format!("scheduled to start at {}", rfc3339(at))
        } else {
            format!(
                "the lead time of a {} change ends at {}",
                c.change.as_str(),
                rfc3339(at)
            )
        };
        return Some((why, Some(at)));
    }
    if c.change != crate::governance::ChangeType::Emergency {
        if let Some((f, until)) = active_freeze(&d.settings.freezes, now) {
            return Some((
                format!("{} is frozen ({}) until {}", d.env, f.name, rfc3339(until)),
                Some(until),
            ));
        }
    }
    None
}

/// A scheduled change still waiting when its window ends does not start:
/// the reason, naming what it waited for.
pub(super) fn expired(d: &Deployment, now: Millis) -> Option<String> {
    let end = d.change.as_ref()?.window_end.filter(|&e| now >= e)?;
    let why = waits(d, now).map(|(why, _)| why)?;
    Some(format!(
        "its window ended at {} before it could start (waiting for: {why})",
        rfc3339(end)
    ))
}

/// The next moment the wait must be looked at again: when time alone
/// ends it, the window closes, or the change is announced.
pub(super) fn wake_at(d: &Deployment, until: Option<Millis>, now: Millis) -> Option<Millis> {
    let c = d.change.as_ref();
    let announce = c
        .filter(|c| !c.announced)
        .and_then(|c| c.announce_at)
        .filter(|&at| at > now);
    [until, c.and_then(|c| c.window_end), announce]
        .into_iter()
        .flatten()
        .min()
}

/// Announces a scheduled change a day before it starts (once): the
/// `Scheduled` notice goes out again from this transition.
pub(super) fn announce(t: &mut Transition, now: Millis) {
    let Some(c) = t.deployment.change.as_mut() else {
        return;
    };
    if c.announced || c.announce_at.is_none_or(|at| now < at) {
        return;
    }
    c.announced = true;
    let start = c.start_after.map(rfc3339).unwrap_or_default();
    t.log
        .push(format!("announced: the change starts at {start}"));
}

pub(super) fn record(t: &mut Transition, by: &str, comment: &str, approved: bool, now: Millis) {
    let Some(c) = t.deployment.change.as_mut() else {
        return;
    };
    c.approvals.push(Approval {
        by: by.to_owned(),
        at: now,
        approved,
        comment: comment.to_owned(),
    });
    let verdict = if approved { "approved" } else { "rejected" };
    let comment = if comment.is_empty() {
        String::new()
    } else {
        format!(": {comment}")
    };
    t.log.push(format!("{verdict} by {by}{comment}"));
}
