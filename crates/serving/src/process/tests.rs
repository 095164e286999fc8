use super::*;

/// A real `/proc/self/stat` line of `cat`: utime 7, stime 3, starttime 182403, vsize 3133440,
/// rss 388 pages.
const STAT: &str = "12249 (cat) R 12244 12244 26117 0 -1 4194304 101 0 0 0 7 3 0 0 20 0 1 0 \
    182403 3133440 388 18446744073709551615 94255751847936 94255751867817 140735643823680 0 0 \
    0 0 0 0 0 0 0 17 1 0 0 0 0 0 94255751883824 94255751885440 94256510484480 140735643830814 \
    140735643830834 140735643830834 140735643832299 0\n";

const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max file size             unlimited            unlimited            bytes     
Max open files            1024                 524288               files     
Max locked memory         8388608              8388608              bytes     
";

const SYSTEM: System = System {
    ticks_per_second: 100,
    page_size: 4096,
    boot_time: Some(1_796_668_004),
};

fn full_stat() -> Stat {
    Stat {
        utime: Some(7),
        stime: Some(3),
        start_ticks: Some(182_403),
        vsize: Some(3_133_440),
        rss_pages: Some(388),
    }
}

#[test]
fn stat_fields_are_read_after_the_command_name() {
    assert_eq!(parse_stat(STAT), full_stat());
}

#[test]
fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
    let hostile = STAT.replace("(cat)", "(a) R 1 2 (b c))");
    assert_eq!(parse_stat(&hostile), full_stat());
}

#[test]
fn malformed_stat_lines_leave_fields_out_and_never_panic() {
    assert_eq!(parse_stat(""), Stat::default());
    assert_eq!(parse_stat("12249 cat R 1 2 3"), Stat::default(), "no `)`");
    assert_eq!(parse_stat("12249 (cat)"), Stat::default());
    // Cut after utime: stime and everything later are missing.
    let cut = &STAT[..STAT.find(" 7 3 ").expect("utime") + 2];
    let stat = parse_stat(cut);
    assert_eq!(stat.utime, Some(7));
    assert_eq!((stat.stime, stat.vsize, stat.rss_pages), (None, None, None));
    // A field that is not a number is missing; the others are kept.
    let stat = parse_stat(&STAT.replace(" 3133440 ", " lots "));
    assert_eq!(stat.vsize, None);
    assert_eq!(stat.rss_pages, Some(388));
    assert_eq!(parse_stat(&STAT.replace(" 388 ", " -1 ")).rss_pages, None);
}

#[test]
fn boot_time_is_the_btime_line() {
    let text = "cpu  1 2 3\nintr 5 0 0\nctxt 99\nbtime 1796668004\nprocesses 12\n";
    assert_eq!(parse_boot_time(text), Some(1_796_668_004));
    assert_eq!(parse_boot_time("cpu 1 2 3\n"), None);
    assert_eq!(parse_boot_time("btime soon\n"), None);
    assert_eq!(parse_boot_time("xbtime 5\n"), None);
}

#[test]
fn max_fds_is_the_soft_open_files_limit() {
    assert_eq!(parse_max_open_files(LIMITS), Some(1024.0));
    let unlimited = LIMITS.replace("1024   ", "unlimited");
    #[allow(clippy::cast_precision_loss)]
    let max = u64::MAX as f64;
    assert_eq!(parse_max_open_files(&unlimited), Some(max));
    assert_eq!(parse_max_open_files("Max open files\n"), None);
    assert_eq!(
        parse_max_open_files("Max open files  many  4096  files\n"),
        None
    );
    assert_eq!(parse_max_open_files(""), None);
}

#[test]
fn values_are_converted_to_seconds_and_bytes() {
    let p = Process::from_sources(&full_stat(), &SYSTEM, Some(9), Some(1024.0));
    assert_eq!(p.cpu_seconds, Some(0.1));
    assert_eq!(p.resident_memory_bytes, Some(388.0 * 4096.0));
    assert_eq!(p.virtual_memory_bytes, Some(3_133_440.0));
    assert_eq!(p.open_fds, Some(9.0));
    assert_eq!(p.max_fds, Some(1024.0));
    assert_eq!(p.start_time_seconds, Some(1_796_668_004.0 + 1824.03));
}

#[test]
fn a_missing_source_is_an_absent_metric() {
    let stat = Stat {
        stime: None,
        ..full_stat()
    };
    let system = System {
        boot_time: None,
        ..SYSTEM
    };
    let p = Process::from_sources(&stat, &system, None, None);
    let names: Vec<_> = p.metrics().map(|m| m.name).collect();
    assert_eq!(
        names,
        [
            "process_virtual_memory_bytes",
            "process_resident_memory_bytes"
        ]
    );
}

#[test]
fn metrics_are_named_typed_and_described_as_client_golang_does() {
    let p = Process::from_sources(&full_stat(), &SYSTEM, Some(9), Some(1024.0));
    let metrics: Vec<_> = p.metrics().collect();
    assert_eq!(metrics.len(), 6);
    assert_eq!(
        metrics[0],
        Metric {
            name: "process_cpu_seconds_total",
            help: "Total user and system CPU time spent in seconds.",
            kind: Kind::Counter,
            value: 0.1,
        }
    );
    assert!(metrics[1..].iter().all(|m| m.kind == Kind::Gauge));
    assert!(metrics.iter().all(|m| m.help.ends_with('.')));
}

#[test]
fn this_process_is_read() {
    let p = Process::read();
    assert!(p.resident_memory_bytes.is_some_and(|v| v > 0.0), "{p:?}");
    assert!(p.virtual_memory_bytes.is_some_and(|v| v > 0.0), "{p:?}");
    assert!(p.cpu_seconds.is_some_and(|v| v >= 0.0), "{p:?}");
    // stdin, stdout, stderr and the directory being read at least.
    assert!(p.open_fds.is_some_and(|v| v >= 3.0), "{p:?}");
    assert!(p.max_fds.is_some_and(|v| v >= 3.0), "{p:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    assert!(
        p.start_time_seconds
            .is_some_and(|t| t <= now + 1.0 && t > now - 3600.0),
        "{p:?}"
    );
}
