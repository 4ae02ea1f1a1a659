//! Memory of the identity graph per identifier, measured from the process's
//! resident set: links generated identifiers (an anonymous id per customer,
//! an e-mail for every second, a customer id for every fifth, about 1.7 per
//! customer) and prints the growth of RSS divided by the identifiers held.
//!
//! `cargo run --release -p journey-loadgen --example identity_memory -- [IDENTIFIERS]`

/// The worker's allocator and its setting (see `journey-alloc`): measured as it runs.
#[global_allocator]
static GLOBAL: journey_alloc::Allocator = journey_alloc::Allocator;

use journey_core::{Guards, Identifier, IdentityGraph, Priority};

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn main() {
    journey_alloc::tune();
    let target: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("a number of identifiers"))
        .unwrap_or(2_000_000);
    let before = rss_kb();
    let mut graph = IdentityGraph::new(Priority::default(), Guards::default());
    let (mut linked, mut customer) = (0u64, 0u64);
    while linked < target {
        let mut ids = vec![Identifier::new(
            "anonymous_id",
            &format!("ck-{:x}", customer.wrapping_mul(0x9e37_79b9)),
        )];
        if customer % 2 == 0 {
            ids.push(Identifier::new(
                "email",
                &format!("user{customer}@example.com"),
            ));
        }
        if customer % 5 == 0 {
            ids.push(Identifier::new("customer_id", &format!("C-{customer}")));
        }
        linked += ids.len() as u64;
        let (usable, _) = graph.usable(&ids);
        graph.link(&usable);
        customer += 1;
        if customer % 100_000 == 0 {
            // As the worker does at every commit.
            drop(graph.take_dirty());
        }
    }
    drop(graph.take_dirty());
    let grown = rss_kb().saturating_sub(before);
    println!(
        "{} identifiers, {} customers: RSS grew {grown} kB, {:.0} bytes per identifier",
        graph.identifier_count(),
        graph.customer_count(),
        grown as f64 * 1024.0 / graph.identifier_count() as f64
    );
}
