//! On-call rotations: who a `rotation:NAME` step target pages at a given instant. Pure: the
//! caller passes the instant (the relay's wall clock at send time).
//!
//! Hand-overs happen at the rotation's local hand-over time. The N-th hand-over is the civil
//! date-time `start + handover + N × shift`, computed on the civil calendar and only then placed
//! in the time zone, so a daily shift across a DST change lasts 23 or 25 hours and the
//! hand-over stays at 09:00 local. A hand-over time that does not exist that day (02:30 on a
//! spring-forward day) is resolved like jiff's `compatible` disambiguation (and RFC 5545):
//! a time in a gap moves forward by the gap's length (02:30 becomes 03:30 in Europe/Berlin),
//! a time that happens twice (fall back) is its first occurrence.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, civil};

/// One person of a rotation (or of an override) and the channels that reach them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub name: String,
    pub notify: Vec<String>,
}

/// `[from, to)`: `person` is on call instead of the schedule.
#[derive(Debug, Clone)]
pub struct Override {
    pub from: Timestamp,
    pub to: Timestamp,
    pub person: Person,
}

#[derive(Debug, Clone)]
pub struct Rotation {
    pub name: String,
    /// The IANA name as configured (`Europe/Berlin`).
    pub time_zone_name: String,
    pub time_zone: TimeZone,
    /// The first hand-over: `start` at `handover`, local civil time.
    pub first: civil::DateTime,
    /// Civil length of a shift (at least an hour; see the module comment).
    pub shift: SignedDuration,
    /// Never empty (validated).
    pub people: Vec<Person>,
    /// Sorted by `from`, not overlapping (validated).
    pub overrides: Vec<Override>,
}

/// A change of who is on call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover<'r> {
    pub at: Timestamp,
    pub person: &'r Person,
}

/// `[start, end)`: `person` is on call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shift<'r> {
    pub start: Timestamp,
    pub end: Timestamp,
    pub person: &'r Person,
}

impl Rotation {
    /// The instant of the `n`-th scheduled hand-over (0: the first person's shift starts).
    pub fn handover(&self, n: i64) -> Timestamp {
        let offset = self
            .shift
            .as_secs()
            .checked_mul(n)
            .map(SignedDuration::from_secs);
        let civil = offset.and_then(|o| self.first.checked_add(o).ok());
        match civil.and_then(|dt| self.time_zone.to_ambiguous_timestamp(dt).compatible().ok()) {
            Some(t) => t,
            None if n < 0 => Timestamp::MIN,
            None => Timestamp::MAX,
        }
    }

    /// The shift running at `at`: the largest `n` whose hand-over is at or before `at`, or -1
    /// before the first hand-over.
    fn shift_index(&self, at: Timestamp) -> i64 {
        let shift = self.shift.as_secs().max(1);
        let since = at.duration_since(self.handover(0)).as_secs();
        if since < 0 {
            return -1;
        }
        // Nominal estimate; DST and zone changes move real hand-overs by hours, which the two
        // loops correct (each runs at most a step or two).
        let mut n = since / shift;
        // Past the end of the calendar (year 9999) hand-overs saturate at Timestamp::MAX.
        while self.handover(n + 1) <= at && self.handover(n + 1) < Timestamp::MAX {
            n += 1;
        }
        while n >= 0 && self.handover(n) > at {
            n -= 1;
        }
        n
    }

    fn scheduled(&self, n: i64) -> &Person {
        // Before the first hand-over the first person is on call.
        let len = i64::try_from(self.people.len()).unwrap_or(1).max(1);
        let i = usize::try_from(n.max(0) % len).unwrap_or(0);
        &self.people[i]
    }

    /// Who is on call at `at`: an override covering `at`, else the scheduled person.
    pub fn on_call(&self, at: Timestamp) -> &Person {
        self.overrides
            .iter()
            .find(|o| o.from <= at && at < o.to)
            .map_or_else(|| self.scheduled(self.shift_index(at)), |o| &o.person)
    }

    /// The next `count` changes of who is on call after `after` (scheduled hand-overs and
    /// override boundaries; a boundary that leaves the same person on call is not a change).
    pub fn upcoming(&self, after: Timestamp, count: usize) -> Vec<Handover<'_>> {
        let mut out = Vec::new();
        let mut current = self.on_call(after);
        let mut n = self.shift_index(after) + 1;
        let mut next_override = self.overrides.iter().flat_map(|o| [o.from, o.to]);
        let mut pending_override = next_override.find(|t| *t > after);
        while out.len() < count {
            let scheduled = self.handover(n);
            let at = match pending_override {
                Some(o) if o <= scheduled => {
                    pending_override = next_override.find(|t| *t > o);
                    if o == scheduled {
                        n += 1;
                    }
                    o
                }
                _ => {
                    n += 1;
                    scheduled
                }
            };
            if at == Timestamp::MAX {
                break;
            }
            let person = self.on_call(at);
            if person != current {
                out.push(Handover { at, person });
                current = person;
            }
            // A one-person rotation without overrides never changes.
            if pending_override.is_none() && self.people.len() < 2 {
                break;
            }
        }
        out
    }

    /// Who is on call from the start of the scheduled shift running at `from` (or `from`,
    /// before the first hand-over) until past `until`: consecutive stretches, each ending
    /// where the next begins, the last one running to the first change at or after `until`
    /// (or to [`Timestamp::MAX`] when nothing changes any more). For the on-call pages and
    /// calendar feeds: a stretch's start does not move while it runs, so it names the stretch.
    pub fn shifts(&self, from: Timestamp, until: Timestamp) -> Vec<Shift<'_>> {
        let n = self.shift_index(from);
        let start = if n < 0 { from } else { self.handover(n) };
        // Every scheduled hand-over in the range and every override boundary, and one more.
        let span = until.duration_since(start).as_secs().max(0);
        let count = usize::try_from(span / self.shift.as_secs().max(1))
            .unwrap_or(usize::MAX / 4)
            .saturating_add(2 * self.overrides.len() + 2);
        let mut out = Vec::new();
        let (mut at, mut person) = (start, self.on_call(start));
        for h in self.upcoming(start, count) {
            out.push(Shift {
                start: at,
                end: h.at,
                person,
            });
            (at, person) = (h.at, h.person);
            if at >= until {
                return out;
            }
        }
        out.push(Shift {
            start: at,
            end: Timestamp::MAX,
            person,
        });
        out
    }

    /// `alice (rotation primary)`: how deliveries, notices and the API name the person paged.
    pub fn label(&self, person: &Person) -> String {
        format!("{} (rotation {})", person.name, self.name)
    }

    /// `2026-03-29 09:00 CEST`: an instant in the rotation's time zone, for humans.
    pub fn local(&self, at: Timestamp) -> String {
        at.to_zoned(self.time_zone.clone())
            .strftime("%Y-%m-%d %H:%M %Z")
            .to_string()
    }
}

/// What `GET /api/v1/rotations` answers: per rotation, who is on call at `now` and the next
/// hand-overs, as UTC instants and as local times.
pub fn to_json<'r>(
    rotations: impl Iterator<Item = &'r Rotation>,
    now: Timestamp,
) -> serde_json::Value {
    let list: Vec<serde_json::Value> = rotations
        .map(|r| {
            let person = |p: &Person| serde_json::json!({"name": p.name, "notify": p.notify});
            let next: Vec<serde_json::Value> = r
                .upcoming(now, 5)
                .into_iter()
                .map(|h| {
                    serde_json::json!({
                        "at": h.at.to_string(),
                        "local": r.local(h.at),
                        "person": person(h.person),
                    })
                })
                .collect();
            serde_json::json!({
                "name": r.name,
                "time_zone": r.time_zone_name,
                "on_call": person(r.on_call(now)),
                "next": next,
            })
        })
        .collect();
    serde_json::json!({ "now": now.to_string(), "rotations": list })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(name: &str) -> Person {
        Person {
            name: name.into(),
            notify: vec![format!("{name}-sms")],
        }
    }

    fn rotation(tz: &str, start: &str, handover: &str, shift_h: i64, n: usize) -> Rotation {
        let time_zone = TimeZone::get(tz).expect("the system tz database has this zone");
        let date: civil::Date = start.parse().expect("date");
        let time: civil::Time = handover.parse().expect("time");
        Rotation {
            name: "primary".into(),
            time_zone_name: tz.into(),
            time_zone,
            first: date.to_datetime(time),
            shift: SignedDuration::from_hours(shift_h),
            people: ["alice", "bob", "carol"][..n]
                .iter()
                .copied()
                .map(person)
                .collect(),
            overrides: Vec::new(),
        }
    }

    /// An instant from a local civil time in `r`'s zone (compatible disambiguation).
    fn local(r: &Rotation, dt: &str) -> Timestamp {
        let dt: civil::DateTime = dt.parse().expect("datetime");
        r.time_zone
            .to_ambiguous_timestamp(dt)
            .compatible()
            .expect("in range")
    }

    fn utc(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn who(r: &Rotation, at: Timestamp) -> &str {
        &r.on_call(at).name
    }

    #[test]
    fn weekly_shifts_hand_over_exactly_at_the_boundary() {
        let r = rotation("Europe/Berlin", "2026-01-05", "09:00", 7 * 24, 2);
        // 09:00 CET = 08:00 UTC.
        assert_eq!(r.handover(0), utc("2026-01-05T08:00:00Z"));
        assert_eq!(who(&r, utc("2026-01-05T08:00:00Z")), "alice");
        assert_eq!(who(&r, utc("2026-01-12T07:59:59.999Z")), "alice");
        assert_eq!(who(&r, utc("2026-01-12T08:00:00Z")), "bob");
        assert_eq!(who(&r, utc("2026-01-19T08:00:00Z")), "alice");
        // Summer: the hand-over stays at 09:00 local, now 07:00 UTC.
        assert_eq!(r.handover(13), utc("2026-04-06T07:00:00Z"));
        assert_eq!(who(&r, utc("2026-04-06T06:59:59Z")), "alice");
        assert_eq!(who(&r, utc("2026-04-06T07:00:00Z")), "bob");
        // Years later, still on the local hand-over.
        assert_eq!(r.local(r.handover(300)), "2031-10-06 09:00 CEST");
        assert_eq!(
            who(&r, r.handover(300) - SignedDuration::from_secs(1)),
            "bob"
        );
        assert_eq!(who(&r, r.handover(300)), "alice");
    }

    #[test]
    fn before_start_the_first_person_is_on_call() {
        let r = rotation("Europe/Berlin", "2026-01-05", "09:00", 24, 3);
        assert_eq!(who(&r, utc("2025-12-31T12:00:00Z")), "alice");
        assert_eq!(who(&r, utc("2026-01-05T07:59:59Z")), "alice");
        assert_eq!(who(&r, utc("2026-01-06T08:00:00Z")), "bob");
        assert_eq!(who(&r, utc("2026-01-07T08:00:00Z")), "carol");
        assert_eq!(who(&r, utc("2026-01-08T08:00:00Z")), "alice");
    }

    #[test]
    fn daily_shifts_last_23_and_25_hours_across_berlin_dst() {
        let r = rotation("Europe/Berlin", "2026-03-01", "09:00", 24, 2);
        // Spring forward: 2026-03-29 02:00 CET -> 03:00 CEST.
        let before = local(&r, "2026-03-28T09:00");
        let after = local(&r, "2026-03-29T09:00");
        assert_eq!(after.duration_since(before), SignedDuration::from_hours(23));
        assert_eq!(after, utc("2026-03-29T07:00:00Z"));
        let (a, b) = (who(&r, before).to_owned(), who(&r, after).to_owned());
        assert_ne!(a, b);
        assert_eq!(who(&r, after - SignedDuration::from_secs(1)), a);
        // Fall back: 2026-10-25 03:00 CEST -> 02:00 CET.
        let before = local(&r, "2026-10-24T09:00");
        let after = local(&r, "2026-10-25T09:00");
        assert_eq!(after.duration_since(before), SignedDuration::from_hours(25));
        assert_eq!(after, utc("2026-10-25T08:00:00Z"));
        assert_ne!(who(&r, before), who(&r, after));
        assert_eq!(
            who(&r, after - SignedDuration::from_secs(1)),
            who(&r, before)
        );
    }

    #[test]
    fn daily_shifts_across_new_york_dst() {
        let r = rotation("America/New_York", "2026-03-01", "08:00", 24, 2);
        // Spring forward 2026-03-08 (EST -5 -> EDT -4), fall back 2026-11-01.
        assert_eq!(r.handover(6), utc("2026-03-07T13:00:00Z"));
        assert_eq!(r.handover(7), utc("2026-03-08T12:00:00Z"));
        assert_eq!(who(&r, utc("2026-03-08T11:59:59Z")), "alice");
        assert_eq!(who(&r, utc("2026-03-08T12:00:00Z")), "bob");
        assert_eq!(
            r.handover(245).duration_since(r.handover(244)),
            SignedDuration::from_hours(25)
        );
        assert_eq!(r.handover(245), utc("2026-11-01T13:00:00Z"));
    }

    #[test]
    fn a_hand_over_inside_the_spring_forward_gap_moves_forward() {
        // 02:30 does not exist in Berlin on 2026-03-29: compatible makes it 03:30 CEST.
        let r = rotation("Europe/Berlin", "2026-03-27", "02:30", 24, 2);
        assert_eq!(r.handover(1), utc("2026-03-28T01:30:00Z")); // 02:30 CET
        assert_eq!(r.handover(2), utc("2026-03-29T01:30:00Z")); // 03:30 CEST
        assert_eq!(r.handover(3), utc("2026-03-30T00:30:00Z")); // 02:30 CEST
        assert_eq!(who(&r, utc("2026-03-29T01:29:59Z")), "bob");
        assert_eq!(who(&r, utc("2026-03-29T01:30:00Z")), "alice");
        // New York: 02:30 on 2026-03-08 becomes 03:30 EDT.
        let r = rotation("America/New_York", "2026-03-07", "02:30", 24, 2);
        assert_eq!(r.handover(1), utc("2026-03-08T07:30:00Z"));
        // Fall back: 01:30 happens twice in New York on 2026-11-01; the first one counts.
        let r = rotation("America/New_York", "2026-10-31", "01:30", 24, 2);
        assert_eq!(r.handover(1), utc("2026-11-01T05:30:00Z")); // 01:30 EDT
    }

    #[test]
    fn twelve_hour_shifts_stay_on_local_times() {
        let r = rotation("Europe/Berlin", "2026-03-28", "09:00", 12, 2);
        assert_eq!(r.local(r.handover(1)), "2026-03-28 21:00 CET");
        assert_eq!(r.local(r.handover(2)), "2026-03-29 09:00 CEST");
        // The night shift across the change is 11 hours long.
        assert_eq!(
            r.handover(2).duration_since(r.handover(1)),
            SignedDuration::from_hours(11)
        );
    }

    #[test]
    fn overrides_win_and_show_in_the_upcoming_changes() {
        let mut r = rotation("Europe/Berlin", "2026-01-05", "09:00", 7 * 24, 2);
        r.overrides.push(Override {
            from: local(&r, "2026-12-24T09:00"),
            to: local(&r, "2026-12-27T09:00"),
            person: person("carol"),
        });
        // 2026-12-21 is a Monday, 50 weeks after the start: alice's week.
        assert_eq!(who(&r, local(&r, "2026-12-24T08:59:59")), "alice");
        assert_eq!(who(&r, local(&r, "2026-12-24T09:00")), "carol");
        assert_eq!(who(&r, local(&r, "2026-12-27T08:59:59")), "carol");
        assert_eq!(who(&r, local(&r, "2026-12-27T09:00")), "alice");
        assert_eq!(who(&r, local(&r, "2026-12-28T09:00")), "bob");
        let next: Vec<(String, &str)> = r
            .upcoming(local(&r, "2026-12-22T12:00"), 4)
            .into_iter()
            .map(|h| (r.local(h.at), h.person.name.as_str()))
            .collect();
        assert_eq!(
            next,
            [
                ("2026-12-24 09:00 CET".to_owned(), "carol"),
                ("2026-12-27 09:00 CET".to_owned(), "alice"),
                ("2026-12-28 09:00 CET".to_owned(), "bob"),
                ("2027-01-04 09:00 CET".to_owned(), "alice"),
            ]
        );
        // The ends of time answer without looping.
        assert_eq!(who(&r, Timestamp::MAX), "alice");
        assert_eq!(who(&r, Timestamp::MIN), "alice");
        assert!(r.upcoming(Timestamp::MAX, 3).is_empty());
        // A one-person rotation has no hand-overs.
        let single = rotation("UTC", "2026-01-05", "09:00", 24, 1);
        assert!(single.upcoming(utc("2026-01-01T00:00:00Z"), 3).is_empty());
    }

    #[test]
    fn shifts_cover_the_range_from_the_running_shifts_start_and_follow_overrides() {
        let mut r = rotation("Europe/Berlin", "2026-03-26", "09:00", 24, 2);
        r.overrides.push(Override {
            from: local(&r, "2026-03-30T12:00"),
            to: local(&r, "2026-03-30T18:00"),
            person: person("dave"),
        });
        let from = local(&r, "2026-03-27T15:00");
        let shifts = r.shifts(from, local(&r, "2026-03-31T00:00"));
        let seen: Vec<(String, String, &str)> = shifts
            .iter()
            .map(|s| (r.local(s.start), r.local(s.end), s.person.name.as_str()))
            .collect();
        let want = [
            ("2026-03-27 09:00 CET", "2026-03-28 09:00 CET", "bob"),
            ("2026-03-28 09:00 CET", "2026-03-29 09:00 CEST", "alice"),
            ("2026-03-29 09:00 CEST", "2026-03-30 09:00 CEST", "bob"),
            ("2026-03-30 09:00 CEST", "2026-03-30 12:00 CEST", "alice"),
            ("2026-03-30 12:00 CEST", "2026-03-30 18:00 CEST", "dave"),
            ("2026-03-30 18:00 CEST", "2026-03-31 09:00 CEST", "alice"),
        ];
        let want: Vec<(String, String, &str)> = want
            .iter()
            .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), *c))
            .collect();
        assert_eq!(seen, want);
        // A later `from` in the same shift names the same stretches.
        let later = r.shifts(local(&r, "2026-03-28T08:59"), local(&r, "2026-03-31T00:00"));
        assert_eq!(later, shifts);
    }

    #[test]
    fn one_person_without_overrides_is_one_endless_shift() {
        let r = rotation("UTC", "2026-01-01", "00:00", 24, 1);
        let from = utc("2026-05-01T10:00:00Z");
        let shifts = r.shifts(from, utc("2026-05-15T10:00:00Z"));
        assert_eq!(shifts.len(), 1);
        assert_eq!(shifts[0].end, Timestamp::MAX);
        // Before the first hand-over, the range starts where it was asked to.
        let early = r.shifts(utc("2025-12-31T10:00:00Z"), utc("2026-01-01T10:00:00Z"));
        assert_eq!(early[0].start, utc("2025-12-31T10:00:00Z"));
    }
}
