//! [`TestCluster`]: a real cluster when `HWAMEISTOR_TEST_KUBECONFIG` names a
//! kubeconfig, otherwise a fresh in-process [`TestApiServer`].

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::cleanup::Cleanup;
use crate::errors::Error;
use crate::test_server::{ServerOptions, TestApiServer};

/// The environment variable that switches tests to a real cluster.
pub const KUBECONFIG_ENV: &str = "HWAMEISTOR_TEST_KUBECONFIG";

pub enum TestCluster {
    Local(TestApiServer),
    Real { kubeconfig: PathBuf },
}

impl TestCluster {
    pub async fn start() -> Result<Self, Error> {
        match std::env::var_os(KUBECONFIG_ENV).filter(|v| !v.is_empty()) {
            Some(path) => Ok(TestCluster::Real {
                kubeconfig: PathBuf::from(path),
            }),
            None => Ok(TestCluster::Local(
                TestApiServer::start(ServerOptions::default()).await?,
            )),
        }
    }

    pub async fn client(&self) -> Result<kube::Client, Error> {
        match self {
            TestCluster::Local(s) => s.client().await,
            TestCluster::Real { kubeconfig } => {
                let kc = Kubeconfig::read_from(kubeconfig)?;
                let config =
                    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
                Ok(kube::Client::try_from(config)?)
            }
        }
    }

    /// Kubeconfig text; `server_host_for_local` applies only to a local server
    /// (a real cluster's kubeconfig is returned as it is).
    pub fn kubeconfig_yaml(&self, server_host_for_local: &str) -> Result<String, Error> {
        match self {
            TestCluster::Local(s) => Ok(s.kubeconfig_yaml(server_host_for_local)),
            TestCluster::Real { kubeconfig } => {
                std::fs::read_to_string(kubeconfig).map_err(|source| Error::ReadKubeconfig {
                    path: kubeconfig.clone(),
                    source,
                })
            }
        }
    }

    pub fn is_real(&self) -> bool {
        matches!(self, TestCluster::Real { .. })
    }

    /// A guard that deletes, when dropped, what is registered with it: on a
    /// real cluster only (an in-process server goes with the test).
    pub fn cleanup(&self) -> Cleanup {
        match self {
            TestCluster::Local(_) => Cleanup::new(None),
            TestCluster::Real { kubeconfig } => Cleanup::new(Some(kubeconfig.clone())),
        }
    }

    /// The local server, if this is not a real cluster.
    pub fn local(&self) -> Option<&TestApiServer> {
        match self {
            TestCluster::Local(s) => Some(s),
            TestCluster::Real { .. } => None,
        }
    }
}
