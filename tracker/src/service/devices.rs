//! Device registration and revocation (admin), kept in step between the
//! database and the in-memory directory.

use ota_proto::api::{Device, DeviceToken, NewDevice};

use ota_proto::direct_paths::DirectPaths;

use super::{ApiError, Caller, Tracker};
use crate::registry::{token_digest, DeviceCredential};

impl Tracker {
    /// Every registered device by id, with its completed downloads.
    ///
    /// Errors: a database failure.
    pub async fn devices(&self) -> Result<Vec<Device>, ApiError> {
        Ok(self.registry.devices().await?)
    }

    /// Registers a device; its token works at once and is shown only in
    /// this answer.
    ///
    /// Errors: [`ApiError::BadRequest`] for an invalid id, channel or model,
    /// [`ApiError::Conflict`] when the id is taken, or a database failure.
    pub async fn register_device(&self, new: NewDevice) -> Result<DeviceToken, ApiError> {
        let token = self
            .registry
            .register_device(&new.device_id, &new.channel, &new.model)
            .await?;
        let n = {
            let mut devices = self.devices.write().unwrap_or_else(|e| e.into_inner());
            devices.insert(DeviceCredential {
                token_sha256: token_digest(&token),
                device_id: new.device_id.clone(),
                channel: new.channel,
                model: new.model,
            });
            devices.len()
        };
        metrics::gauge!("ota_tracker_devices_registered").set(n as f64);
        tracing::info!(device = %new.device_id, "device registered");
        Ok(DeviceToken {
            device_id: new.device_id,
            token,
        })
    }

    /// Keeps the direct paths a device reports (its LAN addresses, its UPnP
    /// mapping): from its next announce, devices behind the same public
    /// address are handed its LAN address, and the swarm view shows them.
    /// When the report moves the device (other candidates for a peer it was
    /// introduced to), those peers get a new introduction at once
    /// (`Tracker::reintroduce_moved`).
    ///
    /// Errors: [`ApiError::Unauthorized`] unless the caller is a device;
    /// [`ApiError::BadRequest`] for a report that fails
    /// [`DirectPaths::check`].
    pub fn report_paths(&self, caller: &Caller, paths: DirectPaths) -> Result<(), ApiError> {
        let Caller::Device(dev) = caller else {
            return Err(ApiError::Unauthorized("only a device reports its paths (its token)"));
        };
        paths.check().map_err(|e| ApiError::BadRequest(e.to_string()))?;
        tracing::debug!(device = %dev.device_id, lan = ?paths.lan, mapped = ?paths.mapped, "direct paths");
        let before = dev.paths();
        dev.set_paths(paths);
        self.reintroduce_moved(dev, before.as_deref(), std::time::Instant::now());
        Ok(())
    }

    /// Revokes a device: its token stops working at once, and its open push
    /// streams end.
    ///
    /// Errors: [`ApiError::NotFound`] for an unknown id, or a database
    /// failure.
    pub async fn revoke_device(&self, device_id: &str) -> Result<(), ApiError> {
        let found = self.registry.revoke_device(device_id).await?;
        let n = {
            let mut devices = self.devices.write().unwrap_or_else(|e| e.into_inner());
            devices.remove(device_id);
            devices.len()
        };
        metrics::gauge!("ota_tracker_devices_registered").set(n as f64);
        self.note_revocation();
        if !found {
            return Err(ApiError::NotFound(format!("no device {device_id}")));
        }
        tracing::info!(device = %device_id, "device revoked");
        Ok(())
    }
}
