//! `ups`: UPS HATs read over I2C (read-only), their power-loss GPIO line, or a UPS served by
//! Network UPS Tools; and an opt-in shutdown guard.

pub mod chips;
