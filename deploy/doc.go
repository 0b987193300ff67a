// Package deploy holds the container image, compose file, Kubernetes manifests and
// collector configuration of condaccess, and the test that checks them.
package deploy
