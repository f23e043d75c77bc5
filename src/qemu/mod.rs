//! Driving QEMU: the command line (`argv`), the process that lives independently of the daemon
//! (`process`), and the QMP client (`qmp`).

pub mod argv;
pub mod cgroup;
pub mod host;
pub mod jail;
pub mod process;
pub mod qga;
pub mod qmp;
