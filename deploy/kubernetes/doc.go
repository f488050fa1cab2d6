// Package kubernetes holds example Kubernetes manifests for a hakit app
// (deployment.yaml, service.yaml, pdb.yaml, hpa.yaml) and the tests that
// check them: the probes point at /readyz and /livez, and the pod's
// termination grace period covers the preStop hook, the drain delay, the
// shutdown timeout and hakit.ShutdownMargin at hakit's defaults. It has no
// code to import; docs/deploy-kubernetes.md explains the manifests.
package kubernetes
