//! Devices' rights kept in Mosquitto's Dynamic Security plugin ([`super::dynsec`]).
//!
//! One role per vehicle, `vehicle-<VIN>`: publish on its response, state, events and connection
//! topics, subscribe to its request topics and to `broadcast/#`. One client per device, its user
//! name the device id (the common name of its certificate, `use_identity_as_username`), bound to
//! its vehicle's role. Withdrawing deletes the client, which disconnects it. The mark is a role
//! with no rights, [`MARK_ROLE`], created once every right of the log is in place.

use super::dynsec::{Answer, Control, ControlError};
use super::topics;
use crate::processes::rights::{Right, RightsKeeper};
use serde_json::{json, Value};

/// The role whose presence says the broker holds every right tacho gave.
pub const MARK_ROLE: &str = "tacho-rights-in-step";
/// How the clients tacho creates are labelled: tacho changes no other client (its own, an
/// operator's), even when a device is registered under the same name.
const DEVICE_LABEL: &str = "tacho device of vehicle ";
/// Commands per control message: a role with its access list is under 1 KiB, so a message stays far
/// below any packet limit (tacho's own is 72 KiB).
const CHUNK: usize = 50;

/// The role of vehicle `vin`.
pub fn vehicle_role(vin: &str) -> String {
    format!("vehicle-{vin}")
}

/// The access list of vehicle `vin`'s role.
pub fn vehicle_acls(vin: &str) -> Vec<Value> {
    let send = topics::vehicle_publishes(vin)
        .into_iter()
        .map(|topic| json!({"acltype": "publishClientSend", "topic": topic, "priority": 0, "allow": true}));
    let subscribe = topics::vehicle_subscribes(vin)
        .into_iter()
        .map(|topic| json!({"acltype": "subscribePattern", "topic": topic, "priority": 0, "allow": true}));
    send.chain(subscribe).collect()
}

/// The Dynamic Security plugin, with tacho's certificate pins, as a [`RightsKeeper`].
pub struct DynsecRights {
    /// The Dynamic Security plugin's control connection.
    pub control: Control,
    /// The pin plugin's (`broker/tacho_pins.c`): each device's user name held to the thumbprint of
    /// the certificate it was registered with.
    pub pins: Control,
}

/// What the plugin's answer to one command means.
fn check(command: &Value, answer: &Answer) -> Result<(), String> {
    let already = match answer.command.as_str() {
        "createRole" => "Role already exists",
        "deleteClient" => "Client not found",
        "deleteRole" => "Role not found",
        // Handled by the caller: the client may lack its role.
        "createClient" => "Client already exists",
        _ => "",
    };
    match answer.error.as_deref() {
        None => Ok(()),
        Some(error) if error == already => Ok(()),
        Some(error) => Err(format!("{} refused: {error} ({command})", answer.command)),
    }
}

fn control_error(e: ControlError) -> String {
    e.to_string()
}

impl DynsecRights {
    async fn request(&self, commands: Vec<Value>) -> Result<Vec<Answer>, String> {
        self.control.request(commands).await.map_err(control_error)
    }

    /// Sends pin commands; every one must succeed.
    async fn pin(&self, commands: Vec<Value>) -> Result<(), String> {
        for chunk in commands.chunks(CHUNK) {
            let answers = self.pins.request(chunk.to_vec()).await.map_err(control_error)?;
            for (command, answer) in chunk.iter().zip(&answers) {
                if let Some(error) = &answer.error {
                    return Err(format!("{} refused: {error} ({command})", answer.command));
                }
            }
        }
        Ok(())
    }

    /// The clients among `usernames` that exist and are not tacho's devices.
    async fn foreign(&self, usernames: &[&str]) -> Result<Vec<String>, String> {
        let gets = usernames.iter().map(|u| json!({"command": "getClient", "username": u})).collect();
        let answers = self.request(gets).await?;
        Ok(usernames
            .iter()
            .zip(&answers)
            .filter(|(_, a)| a.error.is_none())
            .filter(|(_, a)| {
                let label = a.data.as_ref().and_then(|d| d["client"]["textname"].as_str()).unwrap_or_default();
                !label.starts_with(DEVICE_LABEL)
            })
            .map(|(u, _)| (*u).to_owned())
            .collect())
    }

    /// Binds client `device_id` (one of tacho's devices, which exists) to `role` unless it already is.
    async fn bind(&self, device_id: &str, role: &str) -> Result<(), String> {
        let answers = self.request(vec![json!({"command": "getClient", "username": device_id})]).await?;
        let roles =
            answers.first().and_then(|a| a.data.as_ref()).and_then(|d| d["client"]["roles"].as_array().cloned());
        let bound = roles.unwrap_or_default().iter().any(|r| r["rolename"] == role);
        if !bound {
            let add = json!({"command": "addClientRole", "username": device_id, "rolename": role});
            let answers = self.request(vec![add.clone()]).await?;
            answers.iter().try_for_each(|a| check(&add, a))?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl RightsKeeper for DynsecRights {
    /// Pins before rights (a device never has rights without its pin), rights, then unpins after
    /// rights are withdrawn; a client that is not one of tacho's devices is left as it is.
    async fn apply(&self, rights: &[Right]) -> Result<(), String> {
        let named: Vec<&str> = rights
            .iter()
            .filter_map(|r| match r {
                Right::Withdraw { device_id } | Right::Grant { device_id, .. } => Some(device_id.as_str()),
                Right::Retire { .. } => None,
            })
            .collect();
        let mut foreign = Vec::new();
        for chunk in named.chunks(CHUNK) {
            foreign.extend(self.foreign(chunk).await?);
        }
        let (mut pins, mut commands, mut unpins) = (Vec::new(), Vec::new(), Vec::new());
        for right in rights {
            match right {
                Right::Grant { device_id, .. } | Right::Withdraw { device_id } if foreign.contains(device_id) => {
                    tracing::warn!(
                        device_id,
                        "a broker client of this name is not one of tacho's devices: left as it is"
                    );
                }
                Right::Grant { device_id, vin, thumbprint } => {
                    pins.push(json!({"command": "pin", "username": device_id, "thumbprint": thumbprint}));
                    let role = vehicle_role(vin);
                    commands.push(json!({"command": "createRole", "rolename": role, "acls": vehicle_acls(vin),
                        "textname": format!("vehicle {vin}: its own topics (tacho)")}));
                    commands.push(json!({"command": "createClient", "username": device_id,
                        "textname": format!("{DEVICE_LABEL}{vin}"), "roles": [{"rolename": role}]}));
                }
                Right::Withdraw { device_id } => {
                    commands.push(json!({"command": "deleteClient", "username": device_id}));
                    unpins.push(json!({"command": "unpin", "username": device_id}));
                }
                Right::Retire { vin } => commands.push(json!({"command": "deleteRole", "rolename": vehicle_role(vin)})),
            }
        }
        self.pin(pins).await?;
        for chunk in commands.chunks(CHUNK) {
            let answers = self.request(chunk.to_vec()).await?;
            for (command, answer) in chunk.iter().zip(&answers) {
                check(command, answer)?;
                if answer.command == "createClient" && answer.error.is_some() {
                    // It existed: make sure it has its role (a replay, or an operator's change).
                    let device_id = command["username"].as_str().unwrap_or_default();
                    let role = command["roles"][0]["rolename"].as_str().unwrap_or_default();
                    self.bind(device_id, role).await?;
                }
            }
        }
        self.pin(unpins).await
    }

    /// Both plugins carry their mark: a broker that lost either one's state is restored whole.
    async fn marked(&self) -> Result<bool, String> {
        let answers = self.request(vec![json!({"command": "getRole", "rolename": MARK_ROLE})]).await?;
        let rights = match answers.first().and_then(|a| a.error.as_deref()) {
            None => true,
            Some("Role not found") => false,
            Some(error) => return Err(format!("getRole refused: {error}")),
        };
        let answers = self.pins.request(vec![json!({"command": "marked"})]).await.map_err(control_error)?;
        let pins = match answers.first().and_then(|a| a.error.as_deref()) {
            None => true,
            Some("Not marked") => false,
            Some(error) => return Err(format!("marked refused: {error}")),
        };
        Ok(rights && pins)
    }

    async fn mark(&self) -> Result<(), String> {
        self.pin(vec![json!({"command": "mark"})]).await?;
        let create = json!({"command": "createRole", "rolename": MARK_ROLE,
            "textname": "tacho: every device right of the registry is in place (delete it to make tacho restore them)"});
        let answers = self.request(vec![create.clone()]).await?;
        answers.iter().try_for_each(|a| check(&create, a))
    }

    fn generation(&self) -> u64 {
        self.control.connections() + self.pins.connections()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vehicle_role_names_only_its_own_topics() {
        let acls = vehicle_acls("1HGCM82633A004352");
        assert_eq!(acls.len(), 6);
        for acl in &acls {
            let topic = acl["topic"].as_str().unwrap();
            assert!(topic.starts_with("vehicles/1HGCM82633A004352/") || topic == "broadcast/#", "{topic}");
        }
        assert!(acls.iter().all(|a| a["allow"] == true));
    }

    #[test]
    fn a_replayed_command_that_finds_its_effect_is_fine_and_others_are_not() {
        let answer = |command: &str, error: Option<&str>| Answer {
            command: command.into(),
            error: error.map(Into::into),
            data: None,
            correlation_data: None,
        };
        let c = json!({});
        assert!(check(&c, &answer("createRole", Some("Role already exists"))).is_ok());
        assert!(check(&c, &answer("deleteClient", Some("Client not found"))).is_ok());
        assert!(check(&c, &answer("createClient", None)).is_ok());
        assert!(check(&c, &answer("createClient", Some("Role not found"))).is_err());
        assert!(check(&c, &answer("deleteClient", Some("Internal error"))).is_err());
    }
}
