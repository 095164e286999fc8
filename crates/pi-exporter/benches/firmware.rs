//! Whole firmware collection per scrape against the simulated firmware of the shipped board
//! files: one batched property ioctl plus decoding (and, on the Pi 5, GENCMD pmic_read_adc and
//! its parsing), the sysfs reads the collector does on the fixture tree, and rendering. The
//! cache is off so every iteration reads. Also prints the ioctls per scrape.
//!
//! `cargo bench -p pi-exporter --bench firmware`; figures in docs/performance.md.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use pi_exporter::collector::Collector;
use pi_exporter::collector::firmware::mailbox::{Clock, Property, PropertyBatch, VoltageRail};
use pi_exporter::collector::firmware::simulate::SimulatedFirmware;
use pi_exporter::collector::firmware::{Devices, FirmwareCollector};
use pi_exporter::metrics::MetricSet;
use pi_exporter::paths::Paths;

const BOARDS: [(&str, &str); 2] = [("pi4-throttled", "pi4-sd"), ("pi5", "pi5-nvme")];

fn simulated(board: &str) -> Arc<SimulatedFirmware> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("boards")
        .join(format!("{board}.yaml"));
    let file = pi_exporter::simulate::load(&path).expect("shipped board file");
    Arc::new(SimulatedFirmware::new(
        file.firmware.expect("firmware section"),
    ))
}

fn fixture_paths(fixture: &str) -> Paths {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture);
    Paths {
        procfs: root.join("proc"),
        sysfs: root.join("sys"),
        rootfs: root.join("rootfs"),
        devfs: root.join("dev"),
    }
}

fn whole_collection(c: &mut Criterion) {
    for (board, fixture) in BOARDS {
        let firmware = simulated(board);
        let collector = FirmwareCollector::with_devices(
            fixture_paths(fixture),
            Some(Devices::simulated(Arc::clone(&firmware))),
            Duration::ZERO,
        );
        let probe = firmware.ioctls();
        const SCRAPES: u64 = 100;
        for _ in 0..SCRAPES {
            collector
                .collect(&mut MetricSet::new())
                .expect("board scrapes cleanly");
        }
        let per_scrape = (firmware.ioctls() - probe) as f64 / SCRAPES as f64;
        println!("firmware/{board}: {per_scrape} ioctls per scrape ({probe} at start-up to probe)");
        c.bench_function(&format!("firmware/collect/{board}"), |b| {
            b.iter(|| {
                let mut set = MetricSet::new();
                let result = collector.collect(&mut set);
                black_box((set, result))
            })
        });
    }
}

/// The codec alone: a batch like a Pi 4's (6 readings, 12 clocks set and measured, 4 voltages)
/// encoded, answered by the simulator and decoded.
fn batch_round_trip(c: &mut Criterion) {
    let firmware = simulated("pi4-healthy");
    let mut properties = vec![
        Property::FirmwareRevision,
        Property::BoardRevision,
        Property::BoardSerial,
        Property::Temperature,
        Property::MaxTemperature,
        Property::Throttled,
    ];
    for clock in &Clock::ALL[..12] {
        properties.push(Property::ClockRate(*clock));
        properties.push(Property::ClockMeasured(*clock));
    }
    properties.extend(VoltageRail::ALL.map(Property::Voltage));
    let batch = PropertyBatch::new(properties);
    c.bench_function("firmware/batch_round_trip", |b| {
        b.iter(|| {
            use pi_exporter::collector::firmware::device::Mailbox as _;
            let mut buf = batch.request();
            firmware.property(&mut buf).expect("answered");
            let sum: u64 = batch.decode(&buf).filter_map(|(_, r)| r.ok()).sum();
            black_box(sum)
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = whole_collection, batch_round_trip
}
criterion_main!(benches);
