//! The DS3231: strict decoding of its time registers (pure), and reading the chip with `ds323x`.
//!
//! `ds323x` is used for what it decodes exactly: the oscillator-stop flag, EOSC, temperature and
//! aging offset. The time is decoded here because `ds323x::DateTimeAccess::datetime()` accepts
//! invalid BCD digits (`0x1A` becomes 20 minutes), which would present a garbage time as valid.
//!
//! Only getters of `ds323x` are called: its setters write a cached status byte without reading
//! the chip first, and the exporter never writes the RTC anyway. Every read is a `write_read`
//! of a register pointer, which the tests check against `embedded-hal-mock`.

use ds323x::{Ds323x, NaiveDate, Timelike as _};
use embedded_hal::i2c::I2c;

use crate::i2c::{AtAddress, BusError, Fault};

/// The address `ds323x` hard-codes and the chip has unless an address translator moves it.
pub const DEFAULT_ADDRESS: u8 = 0x68;

/// First of the seven time registers: seconds, minutes, hours, day of week, date, month/century,
/// year.
const TIME_REGISTERS: u8 = 0x00;
const HOURS_12H: u8 = 0x40;
const HOURS_PM: u8 = 0x20;
const MONTH_CENTURY: u8 = 0x80;

/// Why the time registers do not hold a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{register} register holds {value:#04x}, which is not {expected}")]
pub struct InvalidTime {
    pub register: &'static str,
    pub value: u8,
    pub expected: &'static str,
}

/// A packed BCD byte, `None` unless both digits are 0-9.
pub fn decode_bcd(byte: u8) -> Option<u8> {
    let (tens, ones) = (byte >> 4, byte & 0x0f);
    (tens <= 9 && ones <= 9).then_some(tens * 10 + ones)
}

fn encode_bcd(value: u8) -> u8 {
    ((value / 10) << 4) | (value % 10)
}

fn field(
    register: &'static str,
    value: u8,
    range: std::ops::RangeInclusive<u8>,
    expected: &'static str,
) -> Result<u8, InvalidTime> {
    decode_bcd(value)
        .filter(|v| range.contains(v))
        .ok_or(InvalidTime {
            register,
            value,
            expected,
        })
}

/// Decodes registers 0x00-0x06 to Unix seconds (the DS3231 keeps UTC on a Pi, as the kernel
/// writes it). Years are 2000-2199: 2000 + the year register, + 100 when the century bit is set,
/// as the kernel's rtc-ds1307 reads them.
pub fn decode_time(registers: &[u8; 7]) -> Result<i64, InvalidTime> {
    let [seconds, minutes, hours, _day_of_week, date, month, year] = *registers;
    let second = field("seconds", seconds, 0..=59, "BCD 00-59")?;
    let minute = field("minutes", minutes, 0..=59, "BCD 00-59")?;
    let hour = if hours & HOURS_12H != 0 {
        let h12 = field("hours", hours & 0x1f, 1..=12, "a 12-hour BCD 01-12")
            .map_err(|e| InvalidTime { value: hours, ..e })?;
        (h12 % 12) + if hours & HOURS_PM != 0 { 12 } else { 0 }
    } else {
        field("hours", hours, 0..=23, "a 24-hour BCD 00-23")?
    };
    let day = field("date", date, 1..=31, "BCD 01-31")?;
    let month_number = field("month", month & !MONTH_CENTURY, 1..=12, "a BCD month 01-12")
        .map_err(|e| InvalidTime { value: month, ..e })?;
    let year_number = field("year", year, 0..=99, "BCD 00-99")?;
    let century = if month & MONTH_CENTURY != 0 { 100 } else { 0 };
    let full_year = 2000 + i32::from(year_number) + century;
    NaiveDate::from_ymd_opt(full_year, month_number.into(), day.into())
        .and_then(|d| d.and_hms_opt(hour.into(), minute.into(), second.into()))
        .map(|t| t.and_utc().timestamp())
        .ok_or(InvalidTime {
            register: "date",
            value: date,
            expected: "a day that exists in that month",
        })
}

/// Encodes Unix seconds as registers 0x00-0x06 (for the simulated chip), keeping the hour mode;
/// `None` outside 2000-2199.
pub fn encode_time(unix: i64, twelve_hour: bool) -> Option<[u8; 7]> {
    const UNIX_EPOCH_DAYS_FROM_CE: i64 = 719_163;
    let days = i32::try_from(unix.div_euclid(86_400) + UNIX_EPOCH_DAYS_FROM_CE).ok()?;
    let date = NaiveDate::from_num_days_from_ce_opt(days)?;
    let time = date.and_time(time_of_day(unix.rem_euclid(86_400))?);
    use ds323x::Datelike as _;
    let year = time.year();
    if !(2000..=2199).contains(&year) {
        return None;
    }
    let year_in_century = u8::try_from((year - 2000) % 100).ok()?;
    let century = if year >= 2100 { MONTH_CENTURY } else { 0 };
    let hour = u8::try_from(time.hour()).ok()?;
    let hours = if twelve_hour {
        let h12 = if hour % 12 == 0 { 12 } else { hour % 12 };
        HOURS_12H | if hour >= 12 { HOURS_PM } else { 0 } | encode_bcd(h12)
    } else {
        encode_bcd(hour)
    };
    Some([
        encode_bcd(u8::try_from(time.second()).ok()?),
        encode_bcd(u8::try_from(time.minute()).ok()?),
        hours,
        u8::try_from(time.weekday().number_from_sunday()).ok()?,
        encode_bcd(u8::try_from(time.day()).ok()?),
        century | encode_bcd(u8::try_from(time.month()).ok()?),
        encode_bcd(year_in_century),
    ])
}

fn time_of_day(seconds: i64) -> Option<ds323x::NaiveTime> {
    let seconds = u32::try_from(seconds).ok()?;
    ds323x::NaiveTime::from_num_seconds_from_midnight_opt(seconds, 0)
}

/// Whether registers hold 12-hour time (the simulated chip keeps the mode when it ticks).
pub fn is_twelve_hour(hours_register: u8) -> bool {
    hours_register & HOURS_12H != 0
}

/// The status and calibration of a DS3231.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Status {
    /// OSF: the oscillator stopped at some point since the flag was last cleared, so the time is
    /// not to be trusted.
    pub oscillator_stopped: bool,
    /// !EOSC: the oscillator keeps running on the backup battery.
    pub oscillator_enabled: bool,
    pub temperature_celsius: f64,
    /// Register 0x10, about 0.1 ppm per step at 25 °C; positive slows the clock.
    pub aging_offset: i8,
}

fn comm<E: Into<BusError>>(error: ds323x::Error<E>) -> BusError {
    match error {
        ds323x::Error::Comm(e) => e.into(),
        ds323x::Error::InvalidInputData => {
            BusError::new(Fault::Other, "ds323x", Some("invalid input data"))
        }
        ds323x::Error::InvalidDeviceState => {
            BusError::new(Fault::Other, "ds323x", Some("invalid device state"))
        }
    }
}

/// Reads the status, temperature and aging registers through `ds323x` (four register reads).
/// The first bus error ends the read: a bus that times out costs one timeout, not four.
pub fn read_status<I2C>(i2c: I2C, address: u8) -> Result<Status, BusError>
where
    I2C: I2c,
    I2C::Error: Into<BusError>,
{
    let mut rtc = Ds323x::new_ds3231(AtAddress::new(i2c, DEFAULT_ADDRESS, address));
    Ok(Status {
        oscillator_stopped: rtc.has_been_stopped().map_err(comm)?,
        oscillator_enabled: rtc.running().map_err(comm)?,
        temperature_celsius: f64::from(rtc.temperature().map_err(comm)?),
        aging_offset: rtc.aging_offset().map_err(comm)?,
    })
}

/// Reads registers 0x00-0x06 in one transfer (the chip latches them at the start, so they are
/// one consistent instant) and decodes them strictly.
pub fn read_time<I2C>(i2c: &mut I2C, address: u8) -> Result<Result<i64, InvalidTime>, BusError>
where
    I2C: I2c,
    I2C::Error: Into<BusError>,
{
    let mut registers = [0u8; 7];
    i2c.write_read(address, &[TIME_REGISTERS], &mut registers)
        .map_err(Into::into)?;
    Ok(decode_time(&registers))
}

#[cfg(test)]
mod tests {
    use embedded_hal::i2c::ErrorKind;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction};

    use super::*;

    /// 2024-06-12 10:15:30 UTC, a Wednesday.
    const JUNE: [u8; 7] = [0x30, 0x15, 0x10, 0x04, 0x12, 0x06, 0x24];
    const JUNE_UNIX: i64 = 1_718_187_330;

    #[test]
    fn decodes_24_and_12_hour_time_and_the_century_bit() {
        assert_eq!(decode_time(&JUNE), Ok(JUNE_UNIX));
        // 10:15:30 AM in 12-hour mode, then 10 PM.
        let mut am = JUNE;
        am[2] = 0x40 | 0x10;
        assert_eq!(decode_time(&am), Ok(JUNE_UNIX));
        let mut pm = JUNE;
        pm[2] = 0x40 | 0x20 | 0x10;
        assert_eq!(decode_time(&pm), Ok(JUNE_UNIX + 12 * 3600));
        // 12 AM is midnight, 12 PM noon.
        let mut midnight = JUNE;
        midnight[2] = 0x40 | 0x12;
        assert_eq!(decode_time(&midnight), Ok(JUNE_UNIX - (10 * 3600)));
        // Century bit: 2124.
        let mut next_century = JUNE;
        next_century[5] |= 0x80;
        let later = decode_time(&next_century).expect("valid");
        // 100 years holding 24 leap days (2100 is not a leap year).
        assert_eq!(later - JUNE_UNIX, 36_524 * 86_400);
        // The power-on value, 2000-01-01 00:00:00.
        assert_eq!(
            decode_time(&[0, 0, 0, 1, 1, 1, 0]),
            Ok(946_684_800),
            "power-on registers"
        );
    }

    #[test]
    fn rejects_invalid_bcd_and_impossible_dates() {
        let cases: [(usize, u8, &str); 9] = [
            (0, 0x5a, "seconds"),
            (0, 0x60, "seconds"),
            (1, 0x1a, "minutes"),
            (2, 0x24, "hours"),
            (2, 0x40 | 0x13, "hours"),
            (4, 0x00, "date"),
            (5, 0x13, "month"),
            (5, 0x80, "month"), // century bit, month 00
            (6, 0xa0, "year"),
        ];
        for (index, value, register) in cases {
            let mut registers = JUNE;
            registers[index] = value;
            let err = decode_time(&registers).expect_err("invalid");
            assert_eq!(err.register, register, "{value:#04x}");
            assert_eq!(err.value, value);
        }
        let mut february_30 = JUNE;
        february_30[4] = 0x30;
        february_30[5] = 0x02;
        let err = decode_time(&february_30).expect_err("no such day");
        assert!(err.to_string().contains("day that exists"), "{err}");
        assert_eq!(decode_bcd(0x99), Some(99));
        assert_eq!(decode_bcd(0x9a), None);
    }

    #[test]
    fn encoding_round_trips_in_both_hour_modes() {
        for unix in [
            946_684_800,
            JUNE_UNIX,
            JUNE_UNIX + 13 * 3600,
            4_102_444_800 + 59,
        ] {
            for twelve in [false, true] {
                let registers = encode_time(unix, twelve).expect("in range");
                assert_eq!(is_twelve_hour(registers[2]), twelve);
                assert_eq!(decode_time(&registers), Ok(unix), "{unix} {twelve}");
            }
        }
        assert_eq!(encode_time(JUNE_UNIX, false), Some(JUNE));
        assert_eq!(
            encode_time(0, false),
            None,
            "1970 is before the chip's range"
        );
    }

    #[test]
    fn reads_only_with_register_pointer_write_reads() {
        // Any write, or any transfer not listed here, fails the mock.
        let mut mock = Mock::new(&[
            Transaction::write_read(0x68, vec![0x0f], vec![0x88]),
            Transaction::write_read(0x68, vec![0x0e], vec![0x1c]),
            Transaction::write_read(0x68, vec![0x11], vec![0xfa, 0x40]),
            Transaction::write_read(0x68, vec![0x10], vec![0xfe]),
            Transaction::write_read(0x68, vec![0x00], JUNE.to_vec()),
        ]);
        let status = read_status(&mut mock, 0x68).expect("status");
        assert_eq!(
            status,
            Status {
                oscillator_stopped: true,
                oscillator_enabled: true,
                temperature_celsius: -5.75,
                aging_offset: -2,
            }
        );
        assert_eq!(read_time(&mut mock, 0x68), Ok(Ok(JUNE_UNIX)));
        mock.done();
    }

    #[test]
    fn a_moved_chip_is_read_at_its_address_and_the_first_bus_error_ends_the_read() {
        let mut mock = Mock::new(&[
            Transaction::write_read(0x69, vec![0x0f], vec![0x00]),
            Transaction::write_read(0x69, vec![0x0e], vec![0x80]).with_error(ErrorKind::Other),
        ]);
        let err = read_status(&mut mock, 0x69).expect_err("bus error");
        assert_eq!(err.fault, Fault::Other);
        mock.done();

        let mut mock = Mock::new(&[Transaction::write_read(0x68, vec![0x00], vec![0; 7])
            .with_error(ErrorKind::NoAcknowledge(
                embedded_hal::i2c::NoAcknowledgeSource::Address,
            ))]);
        let err = read_time(&mut mock, 0x68).expect_err("nack");
        assert_eq!(err.fault, Fault::NoAcknowledge);
        mock.done();
    }
}
