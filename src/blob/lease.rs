//! The lease state machine of blobs and containers, as a pure function of (stored lease, now,
//! operation). Time is wall-clock milliseconds so a lease and its expiry survive a restart.
//!
//! ```text
//!              acquire                 break (period > 0)
//!  Available ───────────▶ Leased ─────────────────────────▶ Breaking
//!      ▲  ▲                │  ▲ │ renew / change               │ period over, or break 0
//!      │  └── release ─────┘  │ │ duration over                ▼
//!      │                      │ └──────────────▶ Expired     Broken
//!      └──────── release ─────┴─── acquire ◀────── (Expired, Broken) ── release ──▶ Available
//! ```
//! Expired and Broken are not stored: they are Leased past its expiry and Breaking past its
//! break time, computed on read.

use serde::{Deserialize, Serialize};

/// What is on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stored {
    #[default]
    Available,
    Leased,
    Breaking,
    Broken,
}

/// The state a client sees (`x-ms-lease-state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Available,
    Leased,
    Expired,
    Breaking,
    Broken,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Available => "available",
            State::Leased => "leased",
            State::Expired => "expired",
            State::Breaking => "breaking",
            State::Broken => "broken",
        }
    }
    /// `x-ms-lease-status`.
    pub fn status(self) -> &'static str {
        match self {
            State::Leased | State::Breaking => "locked",
            _ => "unlocked",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub state: Stored,
    /// The current (or last) lease id.
    pub id: Option<String>,
    /// Seconds, or -1 for infinite.
    pub duration: i64,
    /// When a fixed lease expires (ms since the epoch).
    pub expires_ms: Option<i64>,
    /// When a breaking lease becomes broken (ms since the epoch).
    pub break_ms: Option<i64>,
}

/// A lease operation (`x-ms-lease-action`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Acquire {
        duration: i64,
        proposed: Option<String>,
    },
    Renew {
        id: String,
    },
    Change {
        id: String,
        proposed: String,
    },
    Release {
        id: String,
    },
    Break {
        period: Option<i64>,
    },
}

/// What a successful operation returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub lease_id: Option<String>,
    /// `x-ms-lease-time` for break: seconds until broken.
    pub lease_time: Option<i64>,
}

/// Refusals of lease operations (all 409).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseError {
    AlreadyPresent,
    IdMismatchWithLeaseOperation,
    IsBrokenAndCannotBeRenewed,
    IsBreakingAndCannotBeAcquired,
    IsBreakingAndCannotBeChanged,
    NotPresentWithLeaseOperation,
}

impl LeaseError {
    pub fn code(self) -> &'static str {
        match self {
            LeaseError::AlreadyPresent => "LeaseAlreadyPresent",
            LeaseError::IdMismatchWithLeaseOperation => "LeaseIdMismatchWithLeaseOperation",
            LeaseError::IsBrokenAndCannotBeRenewed => "LeaseIsBrokenAndCannotBeRenewed",
            LeaseError::IsBreakingAndCannotBeAcquired => "LeaseIsBreakingAndCannotBeAcquired",
            LeaseError::IsBreakingAndCannotBeChanged => "LeaseIsBreakingAndCannotBeChanged",
            LeaseError::NotPresentWithLeaseOperation => "LeaseNotPresentWithLeaseOperation",
        }
    }
    pub fn message(self) -> &'static str {
        match self {
            LeaseError::AlreadyPresent => "There is already a lease present.",
            LeaseError::IdMismatchWithLeaseOperation => {
                "The lease ID specified did not match the lease ID for the blob."
            }
            LeaseError::IsBrokenAndCannotBeRenewed => {
                "The lease ID matched, but the lease has been broken explicitly and cannot be renewed."
            }
            LeaseError::IsBreakingAndCannotBeAcquired => {
                "The lease ID matched, but the lease is currently in breaking state and cannot be acquired until it is broken."
            }
            LeaseError::IsBreakingAndCannotBeChanged => {
                "The lease ID matched, but the lease is currently in breaking state and cannot be changed."
            }
            LeaseError::NotPresentWithLeaseOperation => "There is currently no lease on the blob.",
        }
    }
}

/// Refusals of ordinary operations on a leased resource (all 412).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessError {
    IdMissing,
    IdMismatch,
    NotPresent,
}

fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

impl Lease {
    /// The state as of `now`.
    pub fn state(&self, now: i64) -> State {
        match self.state {
            Stored::Available => State::Available,
            Stored::Leased => match self.expires_ms {
                Some(t) if self.duration >= 0 && now >= t => State::Expired,
                _ => State::Leased,
            },
            Stored::Breaking => match self.break_ms {
                Some(t) if now >= t => State::Broken,
                _ => State::Breaking,
            },
            Stored::Broken => State::Broken,
        }
    }

    /// `x-ms-lease-duration` (only while leased).
    pub fn duration_header(&self, now: i64) -> Option<&'static str> {
        (self.state(now) == State::Leased).then_some(if self.duration < 0 {
            "infinite"
        } else {
            "fixed"
        })
    }

    fn matches(&self, id: &str) -> bool {
        self.id.as_deref().is_some_and(|cur| same(cur, id))
    }

    fn leased(id: String, duration: i64, now: i64) -> Lease {
        Lease {
            state: Stored::Leased,
            id: Some(id),
            duration,
            expires_ms: (duration >= 0).then_some(now + duration * 1000),
            break_ms: None,
        }
    }

    /// Applies `op` at `now`: the new lease and what to answer, or the refusal.
    pub fn apply(&self, now: i64, op: &Op) -> Result<(Lease, Outcome), LeaseError> {
        use LeaseError as E;
        let st = self.state(now);
        let ok = |l: Lease, time: Option<i64>| {
            let id = l.id.clone();
            Ok((
                l,
                Outcome {
                    lease_id: id,
                    lease_time: time,
                },
            ))
        };
        match op {
            Op::Acquire { duration, proposed } => {
                let new_id = || {
                    proposed
                        .clone()
                        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
                };
                match st {
                    State::Available | State::Expired | State::Broken => {
                        ok(Lease::leased(new_id(), *duration, now), None)
                    }
                    State::Leased => match proposed {
                        Some(p) if self.matches(p) => {
                            ok(Lease::leased(p.clone(), *duration, now), None)
                        }
                        _ => Err(E::AlreadyPresent),
                    },
                    State::Breaking => match proposed {
                        Some(p) if self.matches(p) => Err(E::IsBreakingAndCannotBeAcquired),
                        _ => Err(E::AlreadyPresent),
                    },
                }
            }
            Op::Renew { id } => match st {
                State::Available => Err(E::NotPresentWithLeaseOperation),
                _ if !self.matches(id) => Err(E::IdMismatchWithLeaseOperation),
                State::Leased | State::Expired => {
                    ok(Lease::leased(id.clone(), self.duration, now), None)
                }
                State::Breaking | State::Broken => Err(E::IsBrokenAndCannotBeRenewed),
            },
            Op::Change { id, proposed } => match st {
                State::Available | State::Expired | State::Broken => {
                    Err(E::NotPresentWithLeaseOperation)
                }
                State::Leased if self.matches(id) || self.matches(proposed) => {
                    let mut l = self.clone();
                    l.id = Some(proposed.clone());
                    ok(l, None)
                }
                State::Leased => Err(E::IdMismatchWithLeaseOperation),
                State::Breaking if self.matches(id) || self.matches(proposed) => {
                    Err(E::IsBreakingAndCannotBeChanged)
                }
                State::Breaking => Err(E::IdMismatchWithLeaseOperation),
            },
            Op::Release { id } => match st {
                State::Available => Err(E::NotPresentWithLeaseOperation),
                _ if !self.matches(id) => Err(E::IdMismatchWithLeaseOperation),
                _ => {
                    let l = Lease {
                        id: None,
                        ..Lease::default()
                    };
                    // The reply still names the lease that was released.
                    Ok((
                        l,
                        Outcome {
                            lease_id: Some(id.clone()),
                            lease_time: None,
                        },
                    ))
                }
            },
            Op::Break { period } => {
                let broken = |l: &Lease| Lease {
                    state: Stored::Broken,
                    expires_ms: None,
                    break_ms: None,
                    ..l.clone()
                };
                match st {
                    State::Available | State::Expired => Err(E::NotPresentWithLeaseOperation),
                    State::Broken => ok(broken(self), Some(0)),
                    State::Leased | State::Breaking => {
                        // How long until broken: the period asked for, never past the end of
                        // a fixed lease or of a break already under way.
                        let remaining = match (st, self.duration) {
                            (State::Breaking, _) => self.break_ms.unwrap_or(now) - now,
                            (_, d) if d >= 0 => self.expires_ms.unwrap_or(now) - now,
                            _ => 0,
                        }
                        .max(0);
                        let wait = match period {
                            Some(p) if st == State::Leased && self.duration < 0 => p * 1000,
                            Some(p) => (p * 1000).min(remaining),
                            None => remaining,
                        };
                        if wait <= 0 {
                            ok(broken(self), Some(0))
                        } else {
                            let l = Lease {
                                state: Stored::Breaking,
                                break_ms: Some(now + wait),
                                ..self.clone()
                            };
                            ok(l, Some((wait + 999) / 1000))
                        }
                    }
                }
            }
        }
    }

    /// May a write (or delete) carrying `given` as `x-ms-lease-id` go ahead?
    pub fn check_write(&self, now: i64, given: Option<&str>) -> Result<(), AccessError> {
        match (self.state(now), given) {
            (State::Leased | State::Breaking, None) => Err(AccessError::IdMissing),
            (State::Leased | State::Breaking, Some(g)) if !self.matches(g) => {
                Err(AccessError::IdMismatch)
            }
            (State::Leased | State::Breaking, Some(_)) => Ok(()),
            (_, Some(_)) => Err(AccessError::NotPresent),
            (_, None) => Ok(()),
        }
    }

    /// May a read carrying `given` go ahead? (No id is always fine.)
    pub fn check_read(&self, now: i64, given: Option<&str>) -> Result<(), AccessError> {
        match given {
            None => Ok(()),
            Some(_) => self.check_write(now, given),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaa-0000-0000-0000-000000000000";
    const B: &str = "bbbbbbbb-0000-0000-0000-000000000000";
    const C: &str = "cccccccc-0000-0000-0000-000000000000";
    const NOW: i64 = 1_000_000;

    /// A lease held by A in each of the five states (Available holds nothing).
    fn in_state(s: State) -> Lease {
        let leased = Lease::leased(A.into(), 30, NOW - 1000);
        match s {
            State::Available => Lease::default(),
            State::Leased => leased,
            State::Expired => Lease::leased(A.into(), 15, NOW - 20_000),
            State::Breaking => Lease {
                state: Stored::Breaking,
                break_ms: Some(NOW + 10_000),
                ..leased
            },
            State::Broken => Lease {
                state: Stored::Broken,
                ..leased
            },
        }
    }

    const STATES: [State; 5] = [
        State::Available,
        State::Leased,
        State::Expired,
        State::Breaking,
        State::Broken,
    ];

    /// The id presented: the holder's, another, or none.
    #[derive(Clone, Copy, Debug)]
    enum Id {
        Holder,
        Other,
        None,
    }

    fn id(i: Id) -> Option<String> {
        match i {
            Id::Holder => Some(A.into()),
            Id::Other => Some(B.into()),
            Id::None => None,
        }
    }

    /// The cloud's table ("Lease Blob", outcomes by state), written out independently of the
    /// implementation: Ok(state after) or the error code.
    fn expected(s: State, op: &str, i: Id) -> Result<State, &'static str> {
        use State::*;
        let present = "LeaseAlreadyPresent";
        let mismatch = "LeaseIdMismatchWithLeaseOperation";
        let absent = "LeaseNotPresentWithLeaseOperation";
        match (op, s, i) {
            ("acquire", Available | Expired | Broken, _) => Ok(Leased),
            ("acquire", Leased, Id::Holder) => Ok(Leased),
            ("acquire", Leased, _) => Err(present),
            ("acquire", Breaking, Id::Holder) => Err("LeaseIsBreakingAndCannotBeAcquired"),
            ("acquire", Breaking, _) => Err(present),
            ("renew" | "release" | "change", Available, _) => Err(absent),
            ("renew" | "release", _, Id::Other | Id::None) => Err(mismatch),
            ("renew", Leased | Expired, Id::Holder) => Ok(Leased),
            ("renew", Breaking | Broken, Id::Holder) => Err("LeaseIsBrokenAndCannotBeRenewed"),
            ("release", _, Id::Holder) => Ok(Available),
            ("change", Expired | Broken, _) => Err(absent),
            ("change", Leased, Id::Holder) => Ok(Leased),
            ("change", Leased, _) => Err(mismatch),
            ("change", Breaking, Id::Holder) => Err("LeaseIsBreakingAndCannotBeChanged"),
            ("change", Breaking, _) => Err(mismatch),
            ("break0", Available | Expired, _) => Err(absent),
            ("break0", _, _) => Ok(Broken),
            ("break", Available | Expired, _) => Err(absent),
            ("break", Broken, _) => Ok(Broken),
            ("break", Leased | Breaking, _) => Ok(Breaking),
            _ => unreachable!("{op} {s:?} {i:?}"),
        }
    }

    #[test]
    fn every_state_operation_and_id() {
        let mut checked = 0;
        for s in STATES {
            for i in [Id::Holder, Id::Other, Id::None] {
                for name in ["acquire", "renew", "change", "release", "break0", "break"] {
                    let lease = in_state(s);
                    assert_eq!(lease.state(NOW), s);
                    let given = id(i);
                    let op = match name {
                        "acquire" => Op::Acquire {
                            duration: 20,
                            proposed: given.clone(),
                        },
                        "renew" => Op::Renew {
                            id: given.clone().unwrap_or_default(),
                        },
                        // change from the presented id to C
                        "change" => Op::Change {
                            id: given.clone().unwrap_or_default(),
                            proposed: C.into(),
                        },
                        "release" => Op::Release {
                            id: given.clone().unwrap_or_default(),
                        },
                        "break0" => Op::Break { period: Some(0) },
                        _ => Op::Break { period: Some(5) },
                    };
                    let got = lease.apply(NOW, &op);
                    let want = expected(s, name, i);
                    match (&got, want) {
                        (Ok((l, out)), Ok(st)) => {
                            assert_eq!(l.state(NOW), st, "{name} in {s:?} with {i:?}");
                            match name {
                                "acquire" => {
                                    assert_eq!(l.expires_ms, Some(NOW + 20_000));
                                    if let Some(g) = &given {
                                        assert_eq!(out.lease_id.as_deref(), Some(g.as_str()));
                                    } else {
                                        assert!(out.lease_id.is_some());
                                    }
                                }
                                "change" => assert_eq!(out.lease_id.as_deref(), Some(C)),
                                "renew" => {
                                    assert_eq!(l.expires_ms, Some(NOW + lease.duration * 1000))
                                }
                                "break0" => assert_eq!(out.lease_time, Some(0)),
                                "break" if s != State::Broken => {
                                    assert_eq!(out.lease_time, Some(5));
                                    // ...and it is broken once the period is over.
                                    assert_eq!(l.state(NOW + 5000), State::Broken);
                                }
                                _ => {}
                            }
                        }
                        (Err(e), Err(code)) => {
                            assert_eq!(e.code(), code, "{name} in {s:?} with {i:?}")
                        }
                        _ => panic!("{name} in {s:?} with {i:?}: got {got:?}, want {want:?}"),
                    }
                    // Writes on the resource in that state, with that id.
                    let w = lease.check_write(NOW, given.as_deref());
                    let want_w = match (s, i) {
                        (State::Leased | State::Breaking, Id::Holder) => Ok(()),
                        (State::Leased | State::Breaking, Id::Other) => {
                            Err(AccessError::IdMismatch)
                        }
                        (State::Leased | State::Breaking, Id::None) => Err(AccessError::IdMissing),
                        (_, Id::None) => Ok(()),
                        _ => Err(AccessError::NotPresent),
                    };
                    assert_eq!(w, want_w, "write in {s:?} with {i:?}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 5 * 3 * 6);
    }

    #[test]
    fn change_to_the_current_id_is_idempotent_and_infinite_never_expires() {
        let l = Lease::leased(A.into(), -1, 0);
        assert_eq!(l.state(i64::MAX / 2), State::Leased);
        let (l2, out) = l
            .apply(
                5,
                &Op::Change {
                    id: B.into(),
                    proposed: A.into(),
                },
            )
            .unwrap();
        assert_eq!(out.lease_id.as_deref(), Some(A));
        // Breaking an infinite lease without a period breaks it at once.
        let (l3, out) = l2.apply(5, &Op::Break { period: None }).unwrap();
        assert_eq!((l3.state(5), out.lease_time), (State::Broken, Some(0)));
        // A fixed lease breaks no later than its expiry.
        let f = Lease::leased(A.into(), 15, 0);
        let (_, out) = f.apply(10_000, &Op::Break { period: Some(60) }).unwrap();
        assert_eq!(out.lease_time, Some(5));
    }
}
