//! `time`: the system clock's synchronisation state, from the kernel's NTP variables
//! (`adjtimex`, read-only), so "the clock is unsynchronised" is one alert.
//!
//! The kernel call is made with `modes = 0`, which only reads (no `CAP_SYS_TIME` needed, nothing
//! changes). The struct is the kernel's own `struct __kernel_timex`, declared here rather than
//! taken from `libc::timex`: its layout is fixed (64-bit fields everywhere), whereas the C
//! library's `struct timex` contains `long` and `struct timeval` and so changes with the C
//! library's `time_t` on 32-bit Arm (the libc crate assumes 32-bit `time_t`, Debian armhf has moved
//! to 64-bit). See [`read_timex`] for which system call takes that struct on which target.

use super::{BuildContext, CollectError, Collector};
use crate::metrics::MetricSet;

/// `STA_*` status bits (`include/uapi/linux/timex.h`) and the label each is exported under.
pub const STATUS_FLAGS: [(i64, &str); 16] = [
    (0x0001, "pll"),
    (0x0002, "ppsfreq"),
    (0x0004, "ppstime"),
    (0x0008, "fll"),
    (0x0010, "ins"),
    (0x0020, "del"),
    (0x0040, "unsync"),
    (0x0080, "freqhold"),
    (0x0100, "ppssignal"),
    (0x0200, "ppsjitter"),
    (0x0400, "ppswander"),
    (0x0800, "ppserror"),
    (0x1000, "clockerr"),
    (0x2000, "nano"),
    (0x4000, "mode"),
    (0x8000, "clk"),
];
const STA_UNSYNC: i64 = 0x0040;
const STA_NANO: i64 = 0x2000;

/// The kernel's `NTP_PHASE_LIMIT` (`kernel/time/ntp.c`): once the maximum error grows past
/// 16 s the kernel itself sets STA_UNSYNC. Below it and with STA_UNSYNC clear the clock is
/// synchronised, as the kernel (`ntp_synced`) and node_exporter's timex collector see it.
const MAX_ERROR_SYNCHRONISED_MICROS: i64 = 16_000_000;

/// The fields of the kernel's timex this collector uses, as the kernel returned them (or as a
/// board file's `time:` section simulates them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timex {
    /// Time offset: nanoseconds when STA_NANO is set, else microseconds.
    pub offset: i64,
    /// Frequency offset in "scaled ppm": ppm with a 16-bit binary fraction.
    pub freq: i64,
    /// Maximum error, microseconds.
    pub maxerror: i64,
    /// Estimated error, microseconds.
    pub esterror: i64,
    pub status: i64,
}

/// What [`Timex`] means, in base units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockState {
    pub synchronized: bool,
    pub estimated_error_seconds: f64,
    pub max_error_seconds: f64,
    pub offset_seconds: f64,
    /// The frequency correction as a ratio (1e-6 = 1 ppm); positive makes the clock run faster.
    pub frequency_adjustment_ratio: f64,
}

/// Decodes the kernel's values (pure, tested on captured values).
pub fn decode(timex: &Timex) -> ClockState {
    let offset_unit = if timex.status & STA_NANO != 0 {
        1e-9
    } else {
        1e-6
    };
    ClockState {
        synchronized: timex.status & STA_UNSYNC == 0
            && timex.maxerror < MAX_ERROR_SYNCHRONISED_MICROS,
        estimated_error_seconds: timex.esterror as f64 * 1e-6,
        max_error_seconds: timex.maxerror as f64 * 1e-6,
        offset_seconds: timex.offset as f64 * offset_unit,
        frequency_adjustment_ratio: timex.freq as f64 / 65_536.0 * 1e-6,
    }
}

/// Writes the metrics of one reading.
pub fn write_metrics(timex: &Timex, out: &mut MetricSet) {
    let state = decode(timex);
    out.gauge(
        "rpi_time_synchronized",
        "1 when the kernel considers the system clock synchronised (STA_UNSYNC clear and maximum error below 16 s)",
    )
    .sample([], f64::from(u8::from(state.synchronized)));
    out.gauge(
        "rpi_time_estimated_error_seconds",
        "The NTP daemon's estimate of the system clock's error",
    )
    .sample([], state.estimated_error_seconds);
    out.gauge(
        "rpi_time_max_error_seconds",
        "Upper bound of the system clock's error; grows by 500 ppm while no NTP daemon updates it",
    )
    .sample([], state.max_error_seconds);
    out.gauge(
        "rpi_time_offset_seconds",
        "The offset the kernel's clock discipline is still correcting",
    )
    .sample([], state.offset_seconds);
    out.gauge(
        "rpi_time_frequency_adjustment_ratio",
        "Frequency correction applied to the system clock (1e-6 = 1 ppm)",
    )
    .sample([], state.frequency_adjustment_ratio);
    let mut status = out.gauge(
        "rpi_time_status",
        "The kernel clock's STA_* status flags, 1 when set (unsync: not synchronised; nano: offsets in ns; pll/fll: discipline mode; ins/del: leap second pending)",
    );
    for (bit, flag) in STATUS_FLAGS {
        status.sample(
            [("flag", flag)],
            f64::from(u8::from(timex.status & bit != 0)),
        );
    }
}

/// The kernel's `struct __kernel_timex` (`include/uapi/linux/timex.h`): every field 64-bit or an
/// `int` padded to 8 bytes, 208 bytes on every architecture. The anonymous `int :32;` padding
/// bit-fields become explicit fields.
#[cfg(target_os = "linux")]
#[repr(C)]
#[derive(Debug, Default)]
struct KernelTimex {
    modes: u32,
    _pad0: i32,
    offset: i64,
    freq: i64,
    maxerror: i64,
    esterror: i64,
    status: i32,
    _pad1: i32,
    constant: i64,
    precision: i64,
    tolerance: i64,
    time_sec: i64,
    time_usec: i64,
    tick: i64,
    ppsfreq: i64,
    jitter: i64,
    shift: i32,
    _pad2: i32,
    stabil: i64,
    jitcnt: i64,
    calcnt: i64,
    errcnt: i64,
    stbcnt: i64,
    tai: i32,
    _reserved: [i32; 11],
}

#[cfg(target_os = "linux")]
const _: () = {
    assert!(std::mem::size_of::<KernelTimex>() == 208);
    assert!(std::mem::offset_of!(KernelTimex, offset) == 8);
    assert!(std::mem::offset_of!(KernelTimex, status) == 40);
    assert!(std::mem::offset_of!(KernelTimex, time_sec) == 72);
    assert!(std::mem::offset_of!(KernelTimex, tai) == 160);
};

/// Reads the kernel's NTP state without changing it.
///
/// On 64-bit targets `adjtimex` takes `struct __kernel_timex` (it is the native layout there).
/// On 32-bit targets only `clock_adjtime64` (Linux 5.1+) does; `adjtimex` there takes the old
/// 32-bit-time layout, which is not used. The syscall numbers come from linux-raw-sys, per
/// architecture.
#[cfg(target_os = "linux")]
pub fn read_timex() -> std::io::Result<Timex> {
    let mut raw = KernelTimex::default(); // modes = 0: read only
    let pointer: *mut KernelTimex = &mut raw;
    // SAFETY: `raw` is a live, writable `struct __kernel_timex` (layout checked above) that the
    // kernel fills in for the duration of the call; `modes = 0` makes the call read-only.
    #[cfg(target_pointer_width = "64")]
    let result = unsafe {
        libc::syscall(
            linux_raw_sys::general::__NR_adjtimex as libc::c_long,
            pointer,
        )
    };
    // SAFETY: as above; `clock_adjtime64(CLOCK_REALTIME, ...)` takes the same struct.
    #[cfg(target_pointer_width = "32")]
    let result = unsafe {
        libc::syscall(
            linux_raw_sys::general::__NR_clock_adjtime64 as libc::c_long,
            libc::CLOCK_REALTIME,
            pointer,
        )
    };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Timex {
        offset: raw.offset,
        freq: raw.freq,
        maxerror: raw.maxerror,
        esterror: raw.esterror,
        status: i64::from(raw.status),
    })
}

#[cfg(not(target_os = "linux"))]
pub fn read_timex() -> std::io::Result<Timex> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "adjtimex exists only on Linux",
    ))
}

#[derive(Debug)]
pub struct TimeCollector {
    /// The board file's `time:` section, replacing the kernel's answer.
    simulated: Option<Timex>,
}

impl TimeCollector {
    pub fn new(ctx: &BuildContext) -> Self {
        Self {
            simulated: ctx.board.as_ref().and_then(|b| b.time),
        }
    }
}

impl Collector for TimeCollector {
    fn collect(&self, out: &mut MetricSet) -> Result<(), CollectError> {
        let timex = match self.simulated {
            Some(timex) => timex,
            None => read_timex().map_err(|e| CollectError::Other(format!("adjtimex: {e}")))?,
        };
        write_metrics(&timex, out);
        Ok(())
    }

    /// Never waits on a device: `adjtimex` reads the kernel clock state.
    fn may_block(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(set: &MetricSet, name: &str) -> Option<f64> {
        set.get(name).map(|f| f.samples[0].value)
    }

    #[test]
    fn chrony_synchronised_in_nano_mode() {
        // What chrony leaves in the kernel while synchronised: PLL | NANO, offsets in ns.
        let timex = Timex {
            offset: -1_234_567,
            freq: -1_048_576,
            maxerror: 12_500,
            esterror: 250,
            status: 0x2001,
        };
        let state = decode(&timex);
        assert!(state.synchronized);
        assert!((state.offset_seconds + 0.001_234_567).abs() < 1e-12);
        assert!((state.frequency_adjustment_ratio + 16e-6).abs() < 1e-15);
        assert!((state.max_error_seconds - 0.0125).abs() < 1e-12);
        assert!((state.estimated_error_seconds - 0.000_25).abs() < 1e-12);

        let mut set = MetricSet::new();
        write_metrics(&timex, &mut set);
        assert_eq!(value(&set, "rpi_time_synchronized"), Some(1.0));
        let flags: Vec<(&str, f64)> = set
            .get("rpi_time_status")
            .map(|f| {
                f.samples
                    .iter()
                    .filter(|s| s.value == 1.0)
                    .map(|s| {
                        let flag = STATUS_FLAGS
                            .iter()
                            .find(|(_, name)| s.labels[0].1 == *name)
                            .map_or("?", |(_, name)| name);
                        (flag, s.value)
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(flags, [("pll", 1.0), ("nano", 1.0)]);
        assert_eq!(
            set.get("rpi_time_status").map(|f| f.samples.len()),
            Some(16)
        );
    }

    #[test]
    fn a_pi_that_booted_offline_is_unsynchronised() {
        // Captured on a machine without an NTP daemon (the CI container): the kernel's initial
        // values (kernel/time/ntp.c), which a Pi that booted offline keeps too: STA_UNSYNC only,
        // 16 s maximum and estimated error, microsecond offsets.
        let timex = Timex {
            offset: 0,
            freq: 0,
            maxerror: 16_000_000,
            esterror: 16_000_000,
            status: 0x0040,
        };
        let state = decode(&timex);
        assert!(!state.synchronized);
        assert_eq!(state.max_error_seconds, 16.0);

        // STA_UNSYNC clear but the maximum error past the limit: still unsynchronised.
        let drifting = Timex {
            status: 0x0001,
            maxerror: 16_000_001,
            offset: 1500,
            ..timex
        };
        let state = decode(&drifting);
        assert!(!state.synchronized);
        assert!(
            (state.offset_seconds - 0.0015).abs() < 1e-12,
            "microseconds"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_kernel_answers_a_read_only_call() {
        // Containers may forbid the call; when it works, the values must be sane.
        if let Ok(timex) = read_timex() {
            assert!(timex.maxerror >= 0);
            assert!(timex.esterror >= 0);
            assert!(timex.status >= 0 && timex.status <= 0xffff);
        }
    }
}
