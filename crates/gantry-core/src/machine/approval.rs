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
        return Some((
            format!(
                "the lead time of a {} change ends at {}",
                c.change.as_str(),
                rfc3339(at)
            ),
            Some(at),
        ));
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
