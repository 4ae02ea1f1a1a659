//! Human-readable rendering of transitions.

use journey_core::{Millis, Transition};

/// `2d 4h`, `35m`, `12s`: the two largest units of a duration.
pub fn duration(ms: Millis) -> String {
    let s = ms / 1000;
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// One line per transition, e.g.
/// `customer_id:C-17  consideration → purchase  via store/purchase after 3d 4h  [funnel5 #2]`.
pub fn line(t: &Transition) -> String {
    let from = t.from.as_deref().unwrap_or("∅");
    let via = match (&t.trigger, t.cause.as_str()) {
        (Some(tr), "touchpoint") => format!("via {}/{}", tr.channel, tr.event_type),
        (Some(tr), cause) => format!("by {cause} ({}/{})", tr.channel, tr.event_type),
        (None, cause) => format!("by {cause}"),
    };
    let after = t
        .previous_stage_ms
        .map(|ms| format!(" after {}", duration(ms)))
        .unwrap_or_default();
    format!(
        "{:<32} {} → {}  {via}{after}  [{} #{}]",
        t.customer_key, from, t.to, t.model, t.sequence
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(3 * 86_400_000 + 4 * 3_600_000 + 5), "3d 4h");
        assert_eq!(duration(35 * 60_000), "35m");
        assert_eq!(duration(12_000), "12s");
    }
}
