//! Which power operation is legal in which state. Pure, so it is tested exhaustively.

use super::model::{PowerState, ProvisioningState};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerOp {
    Start,
    PowerOff { skip_shutdown: bool },
    Deallocate,
    Restart,
    Redeploy,
}

impl PowerOp {
    pub fn name(self) -> &'static str {
        match self {
            PowerOp::Start => "start",
            PowerOp::PowerOff { .. } => "powerOff",
            PowerOp::Deallocate => "deallocate",
            PowerOp::Restart => "restart",
            PowerOp::Redeploy => "redeploy",
        }
    }
}

/// An operation the VM's state does not allow now (the cloud's 409 OperationNotAllowed).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Operation '{op}' is not allowed: {why}.")]
pub struct Refusal {
    pub op: &'static str,
    pub why: String,
}

/// `Ok(true)`: do it; `Ok(false)`: already there, nothing to do; `Err`: refused (409) with why.
pub fn check(op: PowerOp, prov: ProvisioningState, power: PowerState) -> Result<bool, Refusal> {
    use PowerState::*;
    let refuse = |why: &str| {
        Err(Refusal {
            op: op.name(),
            why: why.into(),
        })
    };
    match prov {
        ProvisioningState::Creating | ProvisioningState::Updating => {
            return refuse("the VM is still being provisioned")
        }
        ProvisioningState::Deleting => return refuse("the VM is being deleted"),
        ProvisioningState::Failed if !matches!(op, PowerOp::Redeploy) => {
            return refuse("the VM failed to provision; redeploy or delete it")
        }
        _ => {}
    }
    match (power, op) {
        (Starting | Stopping | Deallocating, _) => {
            refuse(&format!("the VM is in transition ({})", power.code()))
        }
        (Unknown, _) => {
            refuse("the VM's state is unknown (its QEMU does not answer); delete it or wait")
        }
        (Running, PowerOp::Start) => Ok(false),
        (Stopped | Deallocated, PowerOp::Start) => Ok(true),
        (Running, PowerOp::PowerOff { .. }) => Ok(true),
        (Stopped | Deallocated, PowerOp::PowerOff { .. }) => Ok(false),
        (Running | Stopped, PowerOp::Deallocate) => Ok(true),
        (Deallocated, PowerOp::Deallocate) => Ok(false),
        (Running, PowerOp::Restart) => Ok(true),
        (Stopped | Deallocated, PowerOp::Restart) => refuse("the VM is not running; start it"),
        (Running | Stopped | Deallocated, PowerOp::Redeploy) => Ok(true),
    }
}

/// The power state an effective operation ends in.
#[cfg(test)]
pub fn end_state(op: PowerOp) -> PowerState {
    match op {
        PowerOp::Start | PowerOp::Restart | PowerOp::Redeploy => PowerState::Running,
        PowerOp::PowerOff { .. } => PowerState::Stopped,
        PowerOp::Deallocate => PowerState::Deallocated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PowerState::*;

    const POWERS: [PowerState; 7] = [
        Starting,
        Running,
        Stopping,
        Stopped,
        Deallocating,
        Deallocated,
        Unknown,
    ];
    const PROVS: [ProvisioningState; 5] = [
        ProvisioningState::Creating,
        ProvisioningState::Updating,
        ProvisioningState::Succeeded,
        ProvisioningState::Failed,
        ProvisioningState::Deleting,
    ];
    const OPS: [PowerOp; 6] = [
        PowerOp::Start,
        PowerOp::PowerOff {
            skip_shutdown: false,
        },
        PowerOp::PowerOff {
            skip_shutdown: true,
        },
        PowerOp::Deallocate,
        PowerOp::Restart,
        PowerOp::Redeploy,
    ];

    #[test]
    fn every_state_and_operation() {
        for prov in PROVS {
            for power in POWERS {
                for op in OPS {
                    let r = check(op, prov, power);
                    let settled = matches!(power, Running | Stopped | Deallocated);
                    let prov_ok = prov == ProvisioningState::Succeeded
                        || (prov == ProvisioningState::Failed && op == PowerOp::Redeploy);
                    if !settled || !prov_ok {
                        assert!(r.is_err(), "{op:?} in {prov:?}/{power:?} must be refused");
                        continue;
                    }
                    match &r {
                        // A no-op only when the VM is already where the operation leads.
                        Ok(false) => assert!(
                            power == end_state(op)
                                || (power == Deallocated && end_state(op) == Stopped),
                            "{op:?} in {power:?} is a no-op but does not end there"
                        ),
                        Ok(true) => {}
                        Err(e) => {
                            assert_eq!(op, PowerOp::Restart, "{op:?} in {power:?}: {e}");
                            assert_ne!(power, Running);
                        }
                    }
                    assert!(r
                        .as_ref()
                        .err()
                        .is_none_or(|e| e.to_string().contains(op.name())));
                }
            }
        }
    }

    #[test]
    fn restart_only_when_running() {
        assert_eq!(
            check(PowerOp::Restart, ProvisioningState::Succeeded, Running),
            Ok(true)
        );
        assert!(check(PowerOp::Restart, ProvisioningState::Succeeded, Stopped).is_err());
        assert_eq!(
            check(PowerOp::Start, ProvisioningState::Succeeded, Running),
            Ok(false)
        );
        assert_eq!(
            check(PowerOp::Start, ProvisioningState::Succeeded, Deallocated),
            Ok(true)
        );
    }
}
