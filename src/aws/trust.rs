//! Extra TLS trust anchors from `AWS_CA_BUNDLE`, which the AWS CLI and boto3 honour and
//! the Rust SDK does not: without it, users behind a TLS-inspecting proxy could not
//! reach SSM at all. The bundle is added to the platform's roots, for the SDK's HTTPS
//! client and for the data-channel websocket alike.

use crate::error::{Error, Kind, Result};
use std::sync::Arc;

pub(crate) struct Trust {
    /// The PEM bundle, if one is configured.
    pub bundle: Option<Vec<u8>>,
}

impl Trust {
    /// Read `AWS_CA_BUNDLE` if set.
    pub(crate) fn from_env() -> Result<Trust> {
        let Some(path) = std::env::var_os("AWS_CA_BUNDLE").filter(|p| !p.is_empty()) else {
            return Ok(Trust { bundle: None });
        };
        let pem = std::fs::read(&path).map_err(|e| {
            Error::usage(format!(
                "cannot read the CA bundle named by AWS_CA_BUNDLE ({}): {e}",
                std::path::Path::new(&path).display()
            ))
            .hint("point AWS_CA_BUNDLE at a readable PEM file, or unset it")
        })?;
        Ok(Trust { bundle: Some(pem) })
    }

    /// An HTTPS client for the SDK that also trusts the bundle.
    pub(crate) fn sdk_http_client(&self) -> Result<Option<aws_sdk_ssm::config::SharedHttpClient>> {
        use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
        let Some(pem) = &self.bundle else {
            return Ok(None);
        };
        let ctx = TlsContext::builder()
            .with_trust_store(TrustStore::default().with_pem_certificate(pem.clone()))
            .build()
            .map_err(|e| bad_bundle(&e.to_string()))?;
        Ok(Some(
            aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::AwsLc,
                ))
                .tls_context(ctx)
                .build_https(),
        ))
    }

    /// A rustls client configuration for the websocket: platform roots plus the bundle.
    /// `None` keeps tokio-tungstenite's default (platform roots).
    pub(crate) fn websocket_tls(&self) -> Result<Option<Arc<rustls::ClientConfig>>> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::CertificateDer;
        let Some(pem) = &self.bundle else {
            return Ok(None);
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| bad_bundle(&e.to_string()))?;
            roots.add(cert).map_err(|e| bad_bundle(&e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad_bundle("it contains no certificates"));
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Some(Arc::new(config)))
    }
}

fn bad_bundle(why: &str) -> Error {
    Error::new(
        Kind::Usage,
        format!("the CA bundle named by AWS_CA_BUNDLE is not usable: {why}"),
    )
    .hint("it must hold PEM certificates (-----BEGIN CERTIFICATE-----)")
}
