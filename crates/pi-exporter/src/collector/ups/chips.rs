//! The UPS chips, read-only: pure register conversions (checked against the datasheet formulas
//! in the reference notes) and the reads that feed them. Every read is one "write the register
//! pointer, then read" transfer; nothing here writes a register, resets, calibrates or
//! quick-starts a chip. That is why this module does its own register maths instead of using
//! the `ina219` / `max170xx` crates: the maths are a few lines each, CW2015, the Waveshare (E)
//! MCU and the PiSugar 3 have no crate anyway, and the exporter's read-only rule is then visible
//! in one place (`read_block`).

use embedded_hal::i2c::I2c;

use crate::i2c::BusError;

/// One reading of a chip, already in base units; `None` where the chip does not measure it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ChipReading {
    pub voltage_volts: Option<f64>,
    /// Battery current, positive while charging (the profile's sign convention applied).
    pub current_amperes: Option<f64>,
    /// State of charge, 0-1.
    pub charge_ratio: Option<f64>,
    pub charging: Option<bool>,
    pub on_battery: Option<bool>,
    /// A runtime estimate the device computes itself.
    pub runtime_seconds: Option<f64>,
}

/// Why a reading is not exported as valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Implausible {
    #[error("register {register:#04x} reads all 0xFF (a gauge not ready or a floating bus)")]
    AllOnes { register: u8 },
    #[error("battery voltage {0} V is outside the plausible range for this pack")]
    Voltage(String),
    #[error("state of charge {0} % is outside 0-100 %")]
    Charge(String),
    #[error("INA219 math overflow flag is set")]
    Overflow,
}

/// Why a chip could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("implausible reading: {0}")]
    Implausible(#[from] Implausible),
}

/// Plausible voltage of one lithium cell (fully flat cells sit above 2.5 V; 4.35 V is the
/// highest charge voltage of any Li-ion chemistry).
pub const CELL_VOLTS_MIN: f64 = 2.5;
pub const CELL_VOLTS_MAX: f64 = 4.5;

/// Checks a pack voltage against the cell count: 0 V and all-ones garbage fail here.
pub fn check_voltage(volts: f64, cells: u8) -> Result<f64, Implausible> {
    let cells = f64::from(cells.max(1));
    if volts.is_finite() && volts >= CELL_VOLTS_MIN * cells && volts <= CELL_VOLTS_MAX * cells {
        Ok(volts)
    } else {
        Err(Implausible::Voltage(format!("{volts:.3}")))
    }
}

/// Checks a state of charge in percent and turns it into a ratio.
pub fn check_percent(percent: f64) -> Result<f64, Implausible> {
    if percent.is_finite() && (0.0..=100.0).contains(&percent) {
        Ok(percent / 100.0)
    } else {
        Err(Implausible::Charge(format!("{percent:.2}")))
    }
}

fn be16(bytes: [u8; 2]) -> u16 {
    u16::from_be_bytes(bytes)
}

fn not_all_ones(register: u8, bytes: &[u8]) -> Result<(), Implausible> {
    if !bytes.is_empty() && bytes.iter().all(|&b| b == 0xff) {
        Err(Implausible::AllOnes { register })
    } else {
        Ok(())
    }
}

/// The only bus access of the UPS drivers: the register pointer, then `buf.len()` bytes.
pub fn read_block<B: I2c>(
    bus: &mut B,
    address: u8,
    register: u8,
    buf: &mut [u8],
) -> Result<(), BusError>
where
    BusError: From<B::Error>,
{
    bus.write_read(address, &[register], buf)
        .map_err(BusError::from)
}

fn read_word<B: I2c>(bus: &mut B, address: u8, register: u8) -> Result<[u8; 2], ReadError>
where
    BusError: From<B::Error>,
{
    let mut buf = [0u8; 2];
    read_block(bus, address, register, &mut buf)?;
    not_all_ones(register, &buf)?;
    Ok(buf)
}

// ---------------------------------------------------------------------------------------------
// INA219 (Waveshare UPS HAT, (C), (D)): 16-bit big-endian registers.

pub mod ina219 {
    pub const SHUNT: u8 = 0x01;
    pub const BUS: u8 = 0x02;

    /// Bus voltage register: `(raw >> 3) × 4 mV`; bit 0 is the math overflow flag.
    pub fn bus_volts(raw: u16) -> f64 {
        f64::from(raw >> 3) * 0.004
    }

    pub fn overflow(raw: u16) -> bool {
        raw & 0x0001 != 0
    }

    /// Shunt voltage register: signed, 10 µV per LSB.
    pub fn shunt_volts(raw: u16) -> f64 {
        f64::from(raw.cast_signed()) * 10e-6
    }

    /// `I = V_shunt / R_shunt`, computed in software so the calibration register (0 after
    /// power-on; vendor scripts rewrite it) is never needed, let alone written.
    pub fn current_amperes(shunt_volts: f64, shunt_ohms: f64) -> f64 {
        shunt_volts / shunt_ohms
    }

    /// The Waveshare demos' linear state of charge: 0 % at 3.0 V per cell, 100 % at 4.2 V,
    /// clamped (`(V - 6) / 2.4` for 2 cells, `(V - 3) / 1.2` for 1).
    pub fn linear_charge_ratio(volts: f64, cells: u8) -> f64 {
        let cells = f64::from(cells.max(1));
        ((volts - 3.0 * cells) / (1.2 * cells)).clamp(0.0, 1.0)
    }
}

/// INA219 board settings from the profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ina219Settings {
    pub cells: u8,
    pub shunt_ohms: f64,
    /// +1 when a positive shunt voltage means charging, -1 when it means discharging.
    pub current_sign: f64,
}

/// Reads an INA219's bus and shunt registers.
pub fn read_ina219<B: I2c>(
    bus: &mut B,
    address: u8,
    settings: &Ina219Settings,
) -> Result<ChipReading, ReadError>
where
    BusError: From<B::Error>,
{
    let bus_raw = be16(read_word(bus, address, ina219::BUS)?);
    let shunt_raw = be16(read_word(bus, address, ina219::SHUNT)?);
    decode_ina219(bus_raw, shunt_raw, settings)
}

pub fn decode_ina219(
    bus_raw: u16,
    shunt_raw: u16,
    settings: &Ina219Settings,
) -> Result<ChipReading, ReadError> {
    if ina219::overflow(bus_raw) {
        return Err(Implausible::Overflow.into());
    }
    let volts = check_voltage(ina219::bus_volts(bus_raw), settings.cells)?;
    let current = settings.current_sign
        * ina219::current_amperes(ina219::shunt_volts(shunt_raw), settings.shunt_ohms);
    Ok(ChipReading {
        voltage_volts: Some(volts),
        current_amperes: Some(current),
        charge_ratio: Some(ina219::linear_charge_ratio(volts, settings.cells)),
        charging: Some(current > CURRENT_DEADBAND_AMPERES),
        on_battery: Some(current < -CURRENT_DEADBAND_AMPERES),
        runtime_seconds: None,
    })
}

/// Currents within ±20 mA count as neither charging nor discharging (shunt noise, a full pack).
pub const CURRENT_DEADBAND_AMPERES: f64 = 0.02;

// ---------------------------------------------------------------------------------------------
// MAX17040/MAX17043 (Geekworm X728, X120x, UPS-Lite v1.2): VCELL and SOC, big-endian on a plain
// read (SMBus word reads are little-endian, hence the byte swap in vendor scripts).

pub mod max1704x {
    pub const VCELL: u8 = 0x02;
    pub const SOC: u8 = 0x04;

    /// VCELL: 12 bits in 15:4, 1.25 mV per LSB (`(vcell >> 4) × 1250 µV` in the kernel).
    pub fn vcell_volts(raw: u16) -> f64 {
        f64::from(raw >> 4) * 1.25e-3
    }

    /// SOC: high byte in percent, low byte in 1/256 %.
    pub fn soc_percent(raw: u16) -> f64 {
        f64::from(raw >> 8) + f64::from(raw & 0xff) / 256.0
    }
}

pub fn read_max1704x<B: I2c>(bus: &mut B, address: u8, cells: u8) -> Result<ChipReading, ReadError>
where
    BusError: From<B::Error>,
{
    let vcell = be16(read_word(bus, address, max1704x::VCELL)?);
    let soc = be16(read_word(bus, address, max1704x::SOC)?);
    decode_gauge(
        max1704x::vcell_volts(vcell),
        max1704x::soc_percent(soc),
        cells,
    )
}

fn decode_gauge(volts: f64, percent: f64, cells: u8) -> Result<ChipReading, ReadError> {
    Ok(ChipReading {
        voltage_volts: Some(check_voltage(volts, cells)?),
        charge_ratio: Some(check_percent(percent)?),
        ..ChipReading::default()
    })
}

// ---------------------------------------------------------------------------------------------
// CW2015 (UPS-Lite v1.3).

pub mod cw2015 {
    pub const VCELL: u8 = 0x02;
    pub const SOC: u8 = 0x04;

    /// VCELL: big-endian, 305 µV per LSB.
    pub fn vcell_volts(raw: u16) -> f64 {
        f64::from(raw) * 305e-6
    }

    /// SOC: 0x04 in percent, 0x05 in 1/256 %.
    pub fn soc_percent(raw: u16) -> f64 {
        f64::from(raw >> 8) + f64::from(raw & 0xff) / 256.0
    }
}

pub fn read_cw2015<B: I2c>(bus: &mut B, address: u8, cells: u8) -> Result<ChipReading, ReadError>
where
    BusError: From<B::Error>,
{
    let vcell = be16(read_word(bus, address, cw2015::VCELL)?);
    let soc = be16(read_word(bus, address, cw2015::SOC)?);
    decode_gauge(cw2015::vcell_volts(vcell), cw2015::soc_percent(soc), cells)
}

// ---------------------------------------------------------------------------------------------
// Waveshare UPS HAT (E): a microcontroller at 0x2D (int08h/waveshare-ups-hat-e registers).

pub mod waveshare_e {
    /// Charger state: bit 7 charging, bit 6 USB-C PD, bit 5 USB-C powered, bits 2:0 state.
    pub const STATE: u8 = 0x02;
    /// 12 bytes, little-endian words: mV, signed mA, %, remaining mAh, runtime min, time to full.
    pub const BATTERY: u8 = 0x20;
    pub const BATTERY_LEN: usize = 12;
}

pub fn read_waveshare_e<B: I2c>(
    bus: &mut B,
    address: u8,
    cells: u8,
) -> Result<ChipReading, ReadError>
where
    BusError: From<B::Error>,
{
    let mut state = [0u8; 1];
    read_block(bus, address, waveshare_e::STATE, &mut state)?;
    let mut block = [0u8; waveshare_e::BATTERY_LEN];
    read_block(bus, address, waveshare_e::BATTERY, &mut block)?;
    decode_waveshare_e(state[0], &block, cells)
}

pub fn decode_waveshare_e(
    state: u8,
    block: &[u8; waveshare_e::BATTERY_LEN],
    cells: u8,
) -> Result<ChipReading, ReadError> {
    not_all_ones(waveshare_e::BATTERY, block)?;
    let word = |i: usize| u16::from_le_bytes([block[i], block[i + 1]]);
    let volts = check_voltage(f64::from(word(0)) / 1000.0, cells)?;
    let current = f64::from(word(2).cast_signed()) / 1000.0;
    let charge = check_percent(f64::from(word(4)))?;
    let runtime_minutes = word(8);
    let charging = state & 0x80 != 0;
    let usb_powered = state & 0x20 != 0;
    Ok(ChipReading {
        voltage_volts: Some(volts),
        current_amperes: Some(current),
        charge_ratio: Some(charge),
        charging: Some(charging),
        on_battery: Some(!usb_powered),
        runtime_seconds: (!usb_powered && runtime_minutes != 0 && runtime_minutes != 0xffff)
            .then(|| f64::from(runtime_minutes) * 60.0),
    })
}

// ---------------------------------------------------------------------------------------------
// PiSugar 3: a microcontroller at 0x57 (PiSugar/pisugar-power-manager-rs `pisugar3.rs`).

pub mod pisugar3 {
    /// CTR1: bit 7 external power plugged, bit 6 charging allowed.
    pub const CTR1: u8 = 0x02;
    pub const VOLTAGE_HIGH: u8 = 0x22;
    pub const CHARGE: u8 = 0x2a;
}

pub fn read_pisugar3<B: I2c>(bus: &mut B, address: u8, cells: u8) -> Result<ChipReading, ReadError>
where
    BusError: From<B::Error>,
{
    let mut ctr1 = [0u8; 1];
    read_block(bus, address, pisugar3::CTR1, &mut ctr1)?;
    let voltage = read_word(bus, address, pisugar3::VOLTAGE_HIGH)?;
    let mut charge = [0u8; 1];
    read_block(bus, address, pisugar3::CHARGE, &mut charge)?;
    decode_pisugar3(ctr1[0], voltage, charge[0], cells)
}

pub fn decode_pisugar3(
    ctr1: u8,
    voltage: [u8; 2],
    charge: u8,
    cells: u8,
) -> Result<ChipReading, ReadError> {
    not_all_ones(pisugar3::CHARGE, &[charge])?;
    let volts = check_voltage(f64::from(be16(voltage)) / 1000.0, cells)?;
    Ok(ChipReading {
        voltage_volts: Some(volts),
        charge_ratio: Some(check_percent(f64::from(charge))?),
        on_battery: Some(ctr1 & 0x80 == 0),
        ..ChipReading::default()
    })
}

#[cfg(test)]
mod tests {
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction};

    use super::*;
    use crate::i2c::simulated::{Behaviour, Memory, SimulatedBus};
    use crate::i2c::{Access, Bus, Fault};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    const WAVESHARE: Ina219Settings = Ina219Settings {
        cells: 2,
        shunt_ohms: 0.1,
        current_sign: 1.0,
    };

    #[test]
    fn ina219_conversions_follow_the_datasheet() {
        // 8.000 V: 2000 × 4 mV, shifted left by 3, CNVR set.
        assert!(close(ina219::bus_volts((2000 << 3) | 0b10), 8.0));
        assert!(ina219::overflow(0x0001));
        // Shunt: 10 µV per LSB, signed. 1000 LSB = 10 mV; -500 LSB = -5 mV.
        assert!(close(ina219::shunt_volts(1000), 0.01));
        assert!(close(
            ina219::shunt_volts((-500i16).cast_unsigned()),
            -0.005
        ));
        // 10 mV over 0.1 Ω = 100 mA; over 0.01 Ω = 1 A.
        assert!(close(ina219::current_amperes(0.01, 0.1), 0.1));
        assert!(close(ina219::current_amperes(0.01, 0.01), 1.0));
        // Vendor maps: (V - 6) / 2.4 for 2 cells, (V - 3) / 1.2 for 1, clamped.
        assert!(close(ina219::linear_charge_ratio(7.2, 2), 0.5));
        assert!(close(ina219::linear_charge_ratio(3.6, 1), 0.5));
        assert!(close(ina219::linear_charge_ratio(9.0, 2), 1.0));
        assert!(close(ina219::linear_charge_ratio(5.0, 2), 0.0));

        let reading =
            decode_ina219(1800 << 3, (-1200i16).cast_unsigned(), &WAVESHARE).expect("plausible");
        assert!(close(reading.voltage_volts.expect("volts"), 7.2));
        assert!(close(reading.current_amperes.expect("amps"), -0.12));
        assert_eq!(reading.on_battery, Some(true));
        assert_eq!(reading.charging, Some(false));
        let inverted = Ina219Settings {
            current_sign: -1.0,
            ..WAVESHARE
        };
        let reading =
            decode_ina219(1800 << 3, (-1200i16).cast_unsigned(), &inverted).expect("plausible");
        assert_eq!(reading.charging, Some(true));
    }

    #[test]
    fn gauge_conversions_follow_the_datasheets() {
        // MAX1704x: 3.7 V = 2960 × 1.25 mV in bits 15:4; SOC 0x5780 = 87.5 %.
        assert!(close(max1704x::vcell_volts(2960 << 4), 3.7));
        assert!(close(max1704x::soc_percent(0x5780), 87.5));
        // CW2015: 12131 × 305 µV = 3.699955 V; SOC 0x3240 = 50.25 %.
        assert!(close(cw2015::vcell_volts(12131), 3.699_955));
        assert!(close(cw2015::soc_percent(0x3240), 50.25));
    }

    #[test]
    fn implausible_readings_are_rejected() {
        assert!(matches!(
            decode_gauge(0.0, 50.0, 1),
            Err(ReadError::Implausible(Implausible::Voltage(_)))
        ));
        assert!(matches!(
            decode_gauge(3.7, 100.5, 1),
            Err(ReadError::Implausible(Implausible::Charge(_)))
        ));
        assert!(decode_gauge(3.7, 100.0, 1).is_ok());
        assert!(matches!(
            decode_ina219(0, 0, &WAVESHARE),
            Err(ReadError::Implausible(Implausible::Voltage(_)))
        ));
        assert!(matches!(
            decode_ina219((2000 << 3) | 1, 0, &WAVESHARE),
            Err(ReadError::Implausible(Implausible::Overflow))
        ));
        // A 1-cell reading on a 2-cell profile is as wrong as 0 V.
        assert!(check_voltage(3.7, 2).is_err());
        assert!(matches!(
            decode_waveshare_e(0x20, &[0xff; 12], 4),
            Err(ReadError::Implausible(Implausible::AllOnes { .. }))
        ));
        assert!(decode_pisugar3(0x80, [0xff, 0xff], 50, 1).is_err());
        assert!(decode_pisugar3(0x80, [0x0e, 0x74], 0xff, 1).is_err());
    }

    #[test]
    fn all_ones_from_a_gauge_is_implausible_on_the_bus() {
        let sim = SimulatedBus::new(1);
        let mut registers = Memory::default();
        for r in 0..=0xff {
            registers.set(r, 0xff);
        }
        sim.add_device(0x36, Behaviour::ReadOnly, registers);
        let mut bus = Bus::simulated(&sim, Access::Unbound);
        let err = read_max1704x(&mut bus, 0x36, 1).expect_err("all ones");
        assert_eq!(
            err,
            ReadError::Implausible(Implausible::AllOnes { register: 0x02 })
        );
        let err = read_max1704x(&mut bus, 0x37, 1).expect_err("nothing there");
        assert!(matches!(err, ReadError::Bus(e) if e.fault == Fault::NoAcknowledge));
        assert!(sim.writes().is_empty());
    }

    #[test]
    fn waveshare_e_and_pisugar3_decode_their_register_maps() {
        // 15.2 V, -1.5 A, 62 %, 2400 mAh, 95 min, 0; USB-C not powered, not charging.
        let mut block = [0u8; 12];
        for (i, v) in [15200u16, (-1500i16).cast_unsigned(), 62, 2400, 95, 0]
            .into_iter()
            .enumerate()
        {
            block[2 * i..2 * i + 2].copy_from_slice(&v.to_le_bytes());
        }
        let reading = decode_waveshare_e(0x00, &block, 4).expect("plausible");
        assert!(close(reading.voltage_volts.expect("v"), 15.2));
        assert!(close(reading.current_amperes.expect("a"), -1.5));
        assert!(close(reading.charge_ratio.expect("c"), 0.62));
        assert_eq!(reading.on_battery, Some(true));
        assert_eq!(reading.runtime_seconds, Some(95.0 * 60.0));
        let reading = decode_waveshare_e(0xa0, &block, 4).expect("plausible");
        assert_eq!(
            (
                reading.on_battery,
                reading.charging,
                reading.runtime_seconds
            ),
            (Some(false), Some(true), None)
        );

        let reading = decode_pisugar3(0x40, 3700u16.to_be_bytes(), 80, 1).expect("plausible");
        assert!(close(reading.voltage_volts.expect("v"), 3.7));
        assert!(close(reading.charge_ratio.expect("c"), 0.8));
        assert_eq!(reading.on_battery, Some(true));
    }

    #[test]
    fn drivers_only_read_registers() {
        // embedded-hal-mock fails the test on any transfer not listed here: no write, no reset.
        let expectations = [
            Transaction::write_read(0x42, vec![0x02], vec![0x38, 0x42]),
            Transaction::write_read(0x42, vec![0x01], vec![0xfb, 0x50]),
        ];
        let mut mock = Mock::new(&expectations);
        let reading = read_ina219(&mut mock, 0x42, &WAVESHARE).expect("read");
        assert!(close(reading.voltage_volts.expect("v"), 7.2));
        assert!(close(reading.current_amperes.expect("a"), -0.12));
        mock.done();

        let expectations = [
            Transaction::write_read(0x36, vec![0x02], vec![0xb9, 0x00]),
            Transaction::write_read(0x36, vec![0x04], vec![0x57, 0x80]),
        ];
        let mut mock = Mock::new(&expectations);
        let reading = read_max1704x(&mut mock, 0x36, 1).expect("read");
        assert!(close(reading.voltage_volts.expect("v"), 3.7));
        assert!(close(reading.charge_ratio.expect("c"), 0.875));
        mock.done();

        let expectations = [
            Transaction::write_read(0x62, vec![0x02], vec![0x2f, 0x63]),
            Transaction::write_read(0x62, vec![0x04], vec![0x32, 0x40]),
        ];
        let mut mock = Mock::new(&expectations);
        read_cw2015(&mut mock, 0x62, 1).expect("read");
        mock.done();

        let expectations = [
            Transaction::write_read(0x2d, vec![0x02], vec![0x80]),
            Transaction::write_read(
                0x2d,
                vec![0x20],
                vec![0x60, 0x3b, 0xe8, 0x03, 0x50, 0, 0, 0, 0, 0, 0, 0],
            ),
        ];
        let mut mock = Mock::new(&expectations);
        read_waveshare_e(&mut mock, 0x2d, 4).expect("read");
        mock.done();

        let expectations = [
            Transaction::write_read(0x57, vec![0x02], vec![0x80]),
            Transaction::write_read(0x57, vec![0x22], vec![0x0e, 0x74]),
            Transaction::write_read(0x57, vec![0x2a], vec![90]),
        ];
        let mut mock = Mock::new(&expectations);
        read_pisugar3(&mut mock, 0x57, 1).expect("read");
        mock.done();
    }
}
