//! Durable state. `db` is the ACID store (SQLite, WAL, synchronous=FULL) for resources and DHCP
//! leases; `disk` makes OS disks as sparse page-blob files; `fsutil` writes files atomically;
//! `health` says whether the state dir can take new work (room, writable).

pub mod db;
pub mod disk;
pub mod fsutil;
pub mod health;
