//! Board profiles: which chip sits where, with the board's cell count, shunt, current sign and
//! power-loss GPIO line. Every value is here, in one table, so a wrong one is a one-line fix.
//! Values the reference marks **[unverified]** are flagged in `verified` and in
//! `docs/metrics.md`.

/// The chip family a profile reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Chip {
    Ina219 { shunt_ohms: f64, current_sign: f64 },
    Max17043,
    Max17040,
    Cw2015,
    WaveshareE,
    PiSugar3,
}

impl Chip {
    /// The `chip` label of `rpi_ups_info`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ina219 { .. } => "ina219",
            Self::Max17043 => "max17043",
            Self::Max17040 => "max17040",
            Self::Cw2015 => "cw2015",
            Self::WaveshareE => "waveshare-ups-hat-e-mcu",
            Self::PiSugar3 => "pisugar3-mcu",
        }
    }

    /// The kernel power_supply driver that may own this chip (its I2C device's `driver` link);
    /// when one is bound, the gauge is read from `<sysfs>/class/power_supply/` instead.
    pub fn kernel_driver(self) -> Option<&'static str> {
        match self {
            Self::Max17043 | Self::Max17040 => Some("max17040"),
            Self::Cw2015 => Some("cw2015"),
            Self::PiSugar3 => Some("pisugar_3_battery"),
            Self::Ina219 { .. } | Self::WaveshareE => None,
        }
    }
}

/// What the power-loss line's level means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polarity {
    /// High means external power is lost (X728 PLD).
    HighMeansLost,
    /// High means external power is present (X120x PLD, UPS-Lite).
    HighMeansPresent,
}

impl Polarity {
    pub fn on_battery(self, high: bool) -> bool {
        match self {
            Self::HighMeansLost => high,
            Self::HighMeansPresent => !high,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerLine {
    /// The line's name in the device tree (`GPIO6`), found on whichever gpiochip has it.
    pub name: &'static str,
    pub polarity: Polarity,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    pub name: &'static str,
    pub chip: Chip,
    pub address: u8,
    /// Cells in series (the voltage plausibility range and the linear SoC map scale with it).
    pub cells: u8,
    pub power_line: Option<PowerLine>,
    /// Values of this profile the reference marks as unverified on hardware.
    pub unverified: &'static str,
}

/// `--ups.board` values that read a chip; `nut` is handled apart.
pub const PROFILES: &[Profile] = &[
    Profile {
        name: "waveshare-ups-hat",
        chip: Chip::Ina219 {
            shunt_ohms: 0.1,
            current_sign: 1.0,
        },
        address: 0x42,
        cells: 2,
        power_line: None,
        unverified: "shunt 0.1 ohm (implied by cal 4096 / 0.1 mA) and current sign (> 0 = charging)",
    },
    Profile {
        name: "waveshare-ups-hat-c",
        chip: Chip::Ina219 {
            shunt_ohms: 0.01,
            current_sign: 1.0,
        },
        address: 0x43,
        cells: 1,
        power_line: None,
        unverified: "shunt 0.01 ohm (implied by cal 26868 / 0.1524 mA) and current sign (> 0 = charging)",
    },
    Profile {
        name: "waveshare-ups-hat-e",
        chip: Chip::WaveshareE,
        address: 0x2d,
        cells: 4,
        power_line: None,
        unverified: "register map from one third-party crate; reg 0x02 bit 5 (USB-C powered) read as external power present",
    },
    Profile {
        name: "geekworm-x728",
        chip: Chip::Max17043,
        address: 0x36,
        cells: 1,
        power_line: Some(PowerLine {
            name: "GPIO6",
            polarity: Polarity::HighMeansLost,
        }),
        unverified: "fuel-gauge part number (MAX17043)",
    },
    Profile {
        name: "geekworm-x120x",
        chip: Chip::Max17040,
        address: 0x36,
        cells: 1,
        power_line: Some(PowerLine {
            name: "GPIO6",
            polarity: Polarity::HighMeansPresent,
        }),
        unverified: "",
    },
    Profile {
        name: "ups-lite",
        chip: Chip::Cw2015,
        address: 0x62,
        cells: 1,
        power_line: Some(PowerLine {
            name: "GPIO4",
            polarity: Polarity::HighMeansPresent,
        }),
        unverified: "GPIO4 may need its pins bridged on the board",
    },
    Profile {
        name: "pisugar3",
        chip: Chip::PiSugar3,
        address: 0x57,
        cells: 1,
        power_line: None,
        unverified: "register map from the vendor's power manager source only",
    },
];

/// The profile named `name`.
pub fn find(name: &str) -> Option<&'static Profile> {
    PROFILES.iter().find(|p| p.name == name)
}

/// Every `--ups.board` value, for help and errors.
pub fn names() -> Vec<&'static str> {
    let mut names: Vec<_> = PROFILES.iter().map(|p| p.name).collect();
    names.push("nut");
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_match_the_issue_and_reference_table() {
        let expect = [
            ("waveshare-ups-hat", 0x42, 2, "ina219"),
            ("waveshare-ups-hat-c", 0x43, 1, "ina219"),
            ("waveshare-ups-hat-e", 0x2d, 4, "waveshare-ups-hat-e-mcu"),
            ("geekworm-x728", 0x36, 1, "max17043"),
            ("geekworm-x120x", 0x36, 1, "max17040"),
            ("ups-lite", 0x62, 1, "cw2015"),
            ("pisugar3", 0x57, 1, "pisugar3-mcu"),
        ];
        for (name, address, cells, chip) in expect {
            let p = find(name).expect(name);
            assert_eq!((p.address, p.cells, p.chip.label()), (address, cells, chip));
        }
        let x728 = find("geekworm-x728")
            .and_then(|p| p.power_line)
            .expect("line");
        assert_eq!(x728.name, "GPIO6");
        assert!(x728.polarity.on_battery(true));
        let x120x = find("geekworm-x120x")
            .and_then(|p| p.power_line)
            .expect("line");
        assert!(x120x.polarity.on_battery(false));
        let lite = find("ups-lite").and_then(|p| p.power_line).expect("line");
        assert_eq!(lite.name, "GPIO4");
        assert!(!lite.polarity.on_battery(true));
        assert!(names().contains(&"nut"));
        assert!(find("nut").is_none());
    }
}
