//! The Pi 5 PMIC's ADC as GENCMD `pmic_read_adc` prints it, one rail per line with the name
//! right-aligned (`shared/reference/firmware-mailbox.md` §9):
//!
//! ```text
//!    VDD_CORE_A current(7)=0.92871990A
//!      EXT5V_V volt(24)=5.17105900V
//! ```

/// GENCMD command that reads every rail.
pub const COMMAND: &str = "pmic_read_adc";

/// The 5 V input rail: what the under-voltage detector watches. It has no current rail.
pub const INPUT_RAIL: &str = "ext5v";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    Amperes,
    Volts,
}

/// One line of the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RailReading {
    /// Lower-case rail name without its `_A`/`_V` suffix, e.g. `vdd_core`, `ext5v`.
    pub rail: String,
    pub quantity: Quantity,
    pub value: f64,
}

/// Parses the answer. Returns the readings and how many non-empty lines were not readings.
pub fn parse(text: &str) -> (Vec<RailReading>, usize) {
    let mut readings = Vec::new();
    let mut malformed = 0;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match parse_line(line) {
            Some(reading) => readings.push(reading),
            None => malformed += 1,
        }
    }
    (readings, malformed)
}

fn parse_line(line: &str) -> Option<RailReading> {
    let (name, measurement) = line.split_once(char::is_whitespace)?;
    let (kind, value) = measurement.trim_start().split_once('=')?;
    let (quantity, unit, suffix) = if kind.starts_with("current(") {
        (Quantity::Amperes, 'A', "_A")
    } else if kind.starts_with("volt(") {
        (Quantity::Volts, 'V', "_V")
    } else {
        return None;
    };
    if !kind.ends_with(')') {
        return None;
    }
    let value: f64 = value.strip_suffix(unit)?.parse().ok()?;
    if !value.is_finite() {
        return None;
    }
    let rail = name
        .strip_suffix(suffix)
        .unwrap_or(name)
        .to_ascii_lowercase();
    if rail.is_empty() {
        return None;
    }
    Some(RailReading {
        rail,
        quantity,
        value,
    })
}

/// Σ V × A over the rails that have both a voltage and a current: the power the PMIC delivers
/// to the SoC side of the board. It excludes the 5 V input itself, USB, HATs and NVMe (which
/// are fed from 5 V directly). `None` when no rail has both.
pub fn power_watts(readings: &[RailReading]) -> Option<f64> {
    let value = |rail: &str, quantity| {
        readings
            .iter()
            .find(|r| r.rail == rail && r.quantity == quantity)
            .map(|r| r.value)
    };
    let products: Vec<f64> = readings
        .iter()
        .filter(|r| r.quantity == Quantity::Amperes)
        .filter_map(|r| Some(r.value * value(&r.rail, Quantity::Volts)?))
        .collect();
    (!products.is_empty()).then(|| products.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Pi 5's answer, in the firmware's layout.
    const PI5: &str = "\
     3V7_WL_SW_A current(0)=0.00390372A
       3V3_SYS_A current(1)=0.05660400A
       1V8_SYS_A current(2)=0.17177080A
      DDR_VDD2_A current(3)=0.02049476A
      DDR_VDDQ_A current(4)=0.00000000A
       1V1_SYS_A current(5)=0.18544000A
       0V8_SW_A current(6)=0.30162960A
      VDD_CORE_A current(7)=0.92871990A
     3V7_WL_SW_V volt(8)=3.67929100V
       3V3_SYS_V volt(9)=3.30460400V
       1V8_SYS_V volt(10)=1.80006600V
      DDR_VDD2_V volt(11)=1.11078000V
      DDR_VDDQ_V volt(12)=0.60537500V
       1V1_SYS_V volt(13)=1.10525000V
       0V8_SW_V volt(14)=0.80232450V
      VDD_CORE_V volt(15)=0.84105820V
       0V8_AON_A current(16)=0.00000000A
       3V3_DAC_A current(17)=0.00000000A
       3V3_ADC_A current(18)=0.00042735A
       0V8_AON_V volt(19)=0.80201170V
       3V3_DAC_V volt(20)=3.30219800V
       3V3_ADC_V volt(21)=3.30769200V
          HDMI_A current(22)=0.00000000A
          HDMI_V volt(23)=5.16654800V
         EXT5V_V volt(24)=5.17105900V
          BATT_V volt(25)=0.00000000V
";

    #[test]
    fn parses_every_rail_of_a_pi5() {
        let (readings, malformed) = parse(PI5);
        assert_eq!(malformed, 0);
        assert_eq!(readings.len(), 26);
        let currents = readings
            .iter()
            .filter(|r| r.quantity == Quantity::Amperes)
            .count();
        assert_eq!(currents, 12);
        assert_eq!(
            readings[7],
            RailReading {
                rail: "vdd_core".into(),
                quantity: Quantity::Amperes,
                value: 0.9287199
            }
        );
        let input = readings.iter().find(|r| r.rail == INPUT_RAIL);
        assert_eq!(input.map(|r| r.value), Some(5.171059));
        assert!(readings.iter().any(|r| r.rail == "3v7_wl_sw"));
        assert!(readings.iter().any(|r| r.rail == "batt"));
    }

    #[test]
    fn power_is_the_sum_over_paired_rails_only() {
        let (readings, _) = parse(PI5);
        let watts = power_watts(&readings).expect("paired rails");
        let expected = 0.00390372 * 3.679291
            + 0.056604 * 3.304604
            + 0.1717708 * 1.800066
            + 0.02049476 * 1.11078
            + 0.18544 * 1.10525
            + 0.3016296 * 0.8023245
            + 0.9287199 * 0.8410582
            + 0.00042735 * 3.307692;
        assert!((watts - expected).abs() < 1e-9, "{watts} vs {expected}");
        let (only_volts, _) = parse("EXT5V_V volt(24)=5.1V\n");
        assert_eq!(power_watts(&only_volts), None);
    }

    #[test]
    fn skips_and_counts_garbage_lines() {
        let text = "VDD_CORE_A current(7)=0.9A\nEXT5V_V volt(24)=5.1\nfoo\nX temp(1)=3C\n_A current(1)=1A\nY volt(2)=NaNV\n\n";
        let (readings, malformed) = parse(text);
        assert_eq!(readings.len(), 1);
        assert_eq!(malformed, 5);
    }
}
