//! Heap held by the compiled table for 10,000 Ingresses / 50,000 paths / 5,000 hosts,
//! measured exactly by counting allocations (dhat), with the snapshot's own memory
//! excluded.
//!
//! `cargo bench -p vestibule-translate --bench table_memory`

use std::io::Write;

use vestibule_testkit::scale::scale_set;
use vestibule_translate::{Object, Options, Snapshot, compile};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() {
    // `cargo bench` passes `--bench`; a filter argument that does not match skips the run.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with("--") && !"table_memory".contains(&a))
    {
        return;
    }
    let _profiler = dhat::Profiler::builder().testing().build();
    let set = scale_set(10_000, 5_000);
    let snapshot = Snapshot::from_objects(
        set.classes
            .into_iter()
            .map(Object::from)
            .chain(set.ingresses.into_iter().map(Object::from))
            .chain(set.services.into_iter().map(Object::from))
            .chain(set.slices.into_iter().map(Object::from)),
    );
    let before = dhat::HeapStats::get().curr_bytes;
    let compiled = compile(&snapshot, &Options::default());
    let report_bytes: usize = compiled
        .report
        .diagnostics
        .iter()
        .map(|d| d.message.len() + d.field.len())
        .sum();
    let after = dhat::HeapStats::get().curr_bytes;
    let peak = dhat::HeapStats::get().max_bytes;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "table_memory: routes={} clusters={} table+report={:.1} MiB (report text {:.1} KiB); \
         process heap peak {:.1} MiB, snapshot {:.1} MiB",
        compiled.table.routes().len(),
        compiled.table.clusters().len(),
        (after - before) as f64 / (1 << 20) as f64,
        report_bytes as f64 / 1024.0,
        peak as f64 / (1 << 20) as f64,
        before as f64 / (1 << 20) as f64,
    );
}
