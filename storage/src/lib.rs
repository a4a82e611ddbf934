//! brook-storage: the [`Disk`](disk::Disk) trait with a real and a simulated implementation,
//! and the segmented, checksummed partition [`Log`](log::Log) built on it.

pub mod disk;
pub mod log;

pub use disk::{Disk, DiskError, DiskFile, FsDisk, OpenMode, SimDisk};
#[cfg(madsim)]
pub use log::PlantedStorageBugs;
pub use log::{FsyncPolicy, Log, LogConfig, LogError};
