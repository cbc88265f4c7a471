//! Distinct cold images requested by concurrent clients all build: 24
//! images never built before, pulled by 6 clients at once, answer 200,
//! three rounds in a row (each round with images new to the Nix store).

use std::time::Duration;

use support::nix::salted_pkgs;
use support::server::TestServer;

const ROUNDS: usize = 3;
const IMAGES: usize = 24;
const CLIENTS: usize = 6;

#[test]
fn distinct_cold_images_from_concurrent_clients_all_build() {
    let pkgs = salted_pkgs(ROUNDS * IMAGES);
    let server = TestServer::builder()
        .env(
            "NIXERY_PKGS_PATH",
            pkgs.path().to_str().expect("UTF-8 path"),
        )
        .env("NIX_TIMEOUT", "300")
        .start();
    for round in 0..ROUNDS {
        let statuses: Vec<(usize, u16, String)> = std::thread::scope(|scope| {
            let clients: Vec<_> = (0..CLIENTS)
                .map(|client| {
                    let server = &server;
                    scope.spawn(move || {
                        let http = reqwest::blocking::Client::builder()
                            .timeout(Duration::from_secs(300))
                            .build()
                            .expect("client");
                        (client..IMAGES)
                            .step_by(CLIENTS)
                            .map(|i| {
                                let salt = round * IMAGES + i;
                                let url =
                                    server.url(&format!("/v2/hello/salt{salt}/manifests/latest"));
                                match http.get(url).send() {
                                    Ok(response) => {
                                        let status = response.status().as_u16();
                                        (salt, status, response.text().unwrap_or_default())
                                    }
                                    Err(error) => (salt, 0, error.to_string()),
                                }
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            clients
                .into_iter()
                .flat_map(|c| c.join().expect("client thread"))
                .collect()
        });
        assert_eq!(statuses.len(), IMAGES);
        let failed: Vec<_> = statuses.iter().filter(|(_, s, _)| *s != 200).collect();
        assert!(failed.is_empty(), "round {round}: {failed:#?}");
    }
    let killed = server.log_lines_with(&["signal 9", "Killed"]);
    assert!(killed.is_empty(), "{killed:#?}");
}
