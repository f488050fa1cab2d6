package kubernetes

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"hakit.dev/hakit"
)

// The parts of the manifests the checks read.

type meta struct {
	Name   string            `yaml:"name"`
	Labels map[string]string `yaml:"labels"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
	PeriodSeconds    int `yaml:"periodSeconds"`
	FailureThreshold int `yaml:"failureThreshold"`
}

type envVar struct {
	Name  string `yaml:"name"`
	Value string `yaml:"value"`
}

type container struct {
	Name  string `yaml:"name"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env            []envVar `yaml:"env"`
	ReadinessProbe *probe   `yaml:"readinessProbe"`
	LivenessProbe  *probe   `yaml:"livenessProbe"`
	StartupProbe   *probe   `yaml:"startupProbe"`
	Lifecycle      struct {
		PreStop *struct {
			Sleep *struct {
				Seconds int `yaml:"seconds"`
			} `yaml:"sleep"`
			Exec *struct {
				Command []string `yaml:"command"`
			} `yaml:"exec"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
}

type selector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type deployment struct {
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		Replicas int      `yaml:"replicas"`
		Selector selector `yaml:"selector"`
		Strategy struct {
			RollingUpdate struct {
				MaxUnavailable any `yaml:"maxUnavailable"`
			} `yaml:"rollingUpdate"`
		} `yaml:"strategy"`
		Template struct {
			Metadata meta `yaml:"metadata"`
			Spec     struct {
				TerminationGracePeriodSeconds *int        `yaml:"terminationGracePeriodSeconds"`
				Containers                    []container `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type service struct {
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Name       string `yaml:"name"`
			TargetPort any    `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type pdb struct {
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		MinAvailable   *int     `yaml:"minAvailable"`
		MaxUnavailable *int     `yaml:"maxUnavailable"`
		Selector       selector `yaml:"selector"`
	} `yaml:"spec"`
}

type hpa struct {
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		ScaleTargetRef struct {
			Kind string `yaml:"kind"`
			Name string `yaml:"name"`
		} `yaml:"scaleTargetRef"`
		MinReplicas int `yaml:"minReplicas"`
		MaxReplicas int `yaml:"maxReplicas"`
	} `yaml:"spec"`
}

// manifests is every object of the directory's YAML files, by kind.
type manifests struct {
	deployments []deployment
	services    []service
	pdbs        []pdb
	hpas        []hpa
}

// parse decodes the YAML documents of data (one file, named name) into m;
// an unknown kind or a document that does not decode is an error naming
// the file.
func (m *manifests) parse(name string, data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for i := 0; ; i++ {
		var node yaml.Node
		err := dec.Decode(&node)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: document %d: %w", name, i, err)
		}
		var head struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string `yaml:"kind"`
		}
		if err := node.Decode(&head); err != nil {
			return fmt.Errorf("%s: document %d: %w", name, i, err)
		}
		var target any
		switch head.Kind {
		case "Deployment":
			m.deployments = append(m.deployments, deployment{})
			target = &m.deployments[len(m.deployments)-1]
		case "Service":
			m.services = append(m.services, service{})
			target = &m.services[len(m.services)-1]
		case "PodDisruptionBudget":
			m.pdbs = append(m.pdbs, pdb{})
			target = &m.pdbs[len(m.pdbs)-1]
		case "HorizontalPodAutoscaler":
			m.hpas = append(m.hpas, hpa{})
			target = &m.hpas[len(m.hpas)-1]
		default:
			return fmt.Errorf("%s: document %d: unexpected kind %q (apiVersion %q)", name, i, head.Kind, head.APIVersion)
		}
		if err := node.Decode(target); err != nil {
			return fmt.Errorf("%s: %s: %w", name, head.Kind, err)
		}
	}
}

// loadDir parses every *.yaml file of dir.
func loadDir(t *testing.T, dir string) *manifests {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no *.yaml in %s", dir)
	}
	m := &manifests{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.parse(filepath.Base(f), data); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// defaultDuration is the default hakit documents for an environment
// variable (hakit.EnvVars), parsed.
func defaultDuration(name string) (time.Duration, error) {
	for _, v := range hakit.EnvVars() {
		if v.Name == name {
			return time.ParseDuration(v.Default)
		}
	}
	return 0, fmt.Errorf("hakit.EnvVars has no %s", name)
}

// setting is the duration the container's environment sets for name, or
// hakit's default when the manifest leaves it unset.
func setting(c container, name string) (time.Duration, error) {
	for _, e := range c.Env {
		if e.Name == name {
			d, err := time.ParseDuration(e.Value)
			if err != nil {
				return 0, fmt.Errorf("container %s: %s=%q: %w", c.Name, name, e.Value, err)
			}
			return d, nil
		}
	}
	return defaultDuration(name)
}

func hasPort(c container, port any) bool {
	for _, p := range c.Ports {
		switch v := port.(type) {
		case string:
			if p.Name == v {
				return true
			}
		case int:
			if p.ContainerPort == v {
				return true
			}
		}
	}
	return false
}

func matches(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// check lists every way m breaks hakit's drain or the objects' links to
// each other.
func check(m *manifests) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(m.deployments) == 0 {
		bad("no Deployment")
	}
	for _, d := range m.deployments {
		name := d.Metadata.Name
		spec := d.Spec.Template.Spec
		if !matches(d.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels) {
			bad("deployment %s: selector %v does not match its pods' labels %v", name, d.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels)
		}
		if d.Spec.Replicas < 2 {
			bad("deployment %s: %d replicas: a rolling update or a lost node leaves no instance", name, d.Spec.Replicas)
		}
		if mu := d.Spec.Strategy.RollingUpdate.MaxUnavailable; mu != 0 && mu != "0" && mu != "0%" {
			bad("deployment %s: rollingUpdate.maxUnavailable %v: an old pod may drain before its replacement is ready", name, mu)
		}
		if spec.TerminationGracePeriodSeconds == nil {
			bad("deployment %s: no terminationGracePeriodSeconds", name)
		}
		if len(spec.Containers) == 0 {
			bad("deployment %s: no container", name)
		}
		for _, c := range spec.Containers {
			where := fmt.Sprintf("deployment %s: container %s", name, c.Name)
			for _, p := range []struct {
				kind, path string
				probe      *probe
			}{
				{"readinessProbe", "/readyz", c.ReadinessProbe},
				{"livenessProbe", "/livez", c.LivenessProbe},
			} {
				switch {
				case p.probe == nil || p.probe.HTTPGet == nil:
					bad("%s: no HTTP %s", where, p.kind)
				case p.probe.HTTPGet.Path != p.path:
					bad("%s: %s on %q, want %q", where, p.kind, p.probe.HTTPGet.Path, p.path)
				case !hasPort(c, p.probe.HTTPGet.Port):
					bad("%s: %s on port %v, which the container does not declare", where, p.kind, p.probe.HTTPGet.Port)
				}
			}
			if sp := c.StartupProbe; sp != nil && sp.HTTPGet != nil && sp.HTTPGet.Path != "/livez" {
				bad("%s: startupProbe on %q: a dependency outage at start would restart the pod; use /livez", where, sp.HTTPGet.Path)
			}
			var preStop time.Duration
			switch ps := c.Lifecycle.PreStop; {
			case ps == nil:
				bad("%s: no preStop hook", where)
			case ps.Sleep != nil:
				preStop = time.Duration(ps.Sleep.Seconds) * time.Second
			case ps.Exec != nil && len(ps.Exec.Command) > 0 && ps.Exec.Command[0] == "sleep" && len(ps.Exec.Command) == 2:
				d, err := time.ParseDuration(ps.Exec.Command[1] + "s")
				if err != nil {
					bad("%s: preStop %v: %v", where, ps.Exec.Command, err)
				}
				preStop = d
			default:
				bad("%s: preStop is neither a sleep action nor exec sleep N: its length cannot be checked", where)
			}
			drain, err := setting(c, "HAKIT_DRAIN_DELAY")
			if err != nil {
				bad("%s: %v", where, err)
			}
			shutdown, err := setting(c, "HAKIT_SHUTDOWN_TIMEOUT")
			if err != nil {
				bad("%s: %v", where, err)
			}
			if rp := c.ReadinessProbe; rp != nil {
				period, fails := max(rp.PeriodSeconds, 1), max(rp.FailureThreshold, 1)
				if notReady := time.Duration(period*fails) * time.Second; drain < notReady {
					bad("%s: drain delay %v is shorter than the readiness probe's %ds × %d = %v to mark the pod not ready", where, drain, period, fails, notReady)
				}
			}
			need := preStop + drain + shutdown + hakit.ShutdownMargin
			if g := spec.TerminationGracePeriodSeconds; g != nil {
				if grace := time.Duration(*g) * time.Second; grace <= need {
					bad("%s: terminationGracePeriodSeconds %v is not more than preStop %v + drain delay %v + shutdown timeout %v + margin %v = %v: the kubelet kills the app mid-drain",
						where, grace, preStop, drain, shutdown, hakit.ShutdownMargin, need)
				}
			}
		}
	}
	podOf := func(labels map[string]string) (deployment, bool) {
		for _, d := range m.deployments {
			if matches(labels, d.Spec.Template.Metadata.Labels) {
				return d, true
			}
		}
		return deployment{}, false
	}
	for _, s := range m.services {
		d, ok := podOf(s.Spec.Selector)
		if !ok {
			bad("service %s: selector %v matches no Deployment's pods", s.Metadata.Name, s.Spec.Selector)
			continue
		}
		for _, p := range s.Spec.Ports {
			found := false
			for _, c := range d.Spec.Template.Spec.Containers {
				found = found || hasPort(c, p.TargetPort)
			}
			if !found {
				bad("service %s: port %s targets %v, which deployment %s does not declare", s.Metadata.Name, p.Name, p.TargetPort, d.Metadata.Name)
			}
			if p.TargetPort == "admin" {
				bad("service %s: exposes the admin port (metrics, verbose readiness)", s.Metadata.Name)
			}
		}
	}
	for _, p := range m.pdbs {
		d, ok := podOf(p.Spec.Selector.MatchLabels)
		if !ok {
			bad("pdb %s: selector %v matches no Deployment's pods", p.Metadata.Name, p.Spec.Selector.MatchLabels)
			continue
		}
		switch {
		case (p.Spec.MinAvailable == nil) == (p.Spec.MaxUnavailable == nil):
			bad("pdb %s: set exactly one of minAvailable and maxUnavailable", p.Metadata.Name)
		case p.Spec.MinAvailable != nil && *p.Spec.MinAvailable >= d.Spec.Replicas:
			bad("pdb %s: minAvailable %d ≥ %d replicas: no node can ever be drained", p.Metadata.Name, *p.Spec.MinAvailable, d.Spec.Replicas)
		case p.Spec.MaxUnavailable != nil && (*p.Spec.MaxUnavailable < 1 || *p.Spec.MaxUnavailable >= d.Spec.Replicas):
			bad("pdb %s: maxUnavailable %d: want 1 to %d", p.Metadata.Name, *p.Spec.MaxUnavailable, d.Spec.Replicas-1)
		}
	}
	for _, h := range m.hpas {
		ref := h.Spec.ScaleTargetRef
		found := false
		for _, d := range m.deployments {
			found = found || (ref.Kind == "Deployment" && ref.Name == d.Metadata.Name)
		}
		if !found {
			bad("hpa %s: scaleTargetRef %s/%s is no Deployment here", h.Metadata.Name, ref.Kind, ref.Name)
		}
		if h.Spec.MinReplicas < 2 || h.Spec.MaxReplicas < h.Spec.MinReplicas {
			bad("hpa %s: replicas %d..%d: want at least 2, min ≤ max", h.Metadata.Name, h.Spec.MinReplicas, h.Spec.MaxReplicas)
		}
	}
	return errs
}

// TestManifests checks the directory's manifests against hakit's defaults.
func TestManifests(t *testing.T) {
	m := loadDir(t, ".")
	if len(m.deployments) != 1 || len(m.services) != 1 || len(m.pdbs) != 1 || len(m.hpas) != 1 {
		t.Fatalf("want one Deployment, Service, PodDisruptionBudget and HorizontalPodAutoscaler; got %d, %d, %d, %d",
			len(m.deployments), len(m.services), len(m.pdbs), len(m.hpas))
	}
	for _, err := range check(m) {
		t.Error(err)
	}
}

// TestDefaultsRead makes sure the numbers the check adds up come from
// hakit and are the ones its docs promise.
func TestDefaultsRead(t *testing.T) {
	drain, err := defaultDuration("HAKIT_DRAIN_DELAY")
	if err != nil || drain <= 0 {
		t.Fatalf("HAKIT_DRAIN_DELAY default: %v, %v", drain, err)
	}
	shutdown, err := defaultDuration("HAKIT_SHUTDOWN_TIMEOUT")
	if err != nil || shutdown <= 0 {
		t.Fatalf("HAKIT_SHUTDOWN_TIMEOUT default: %v, %v", shutdown, err)
	}
	if _, err := defaultDuration("HAKIT_NO_SUCH_VARIABLE"); err == nil {
		t.Error("an unknown variable has a default")
	}
	t.Logf("hakit defaults: drain delay %v, shutdown timeout %v, margin %v", drain, shutdown, hakit.ShutdownMargin)
}

// TestCheckCatches feeds the check broken variants of the manifests: each
// must be reported, with a message naming what is wrong.
func TestCheckCatches(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(m *manifests)
		want   string
	}{
		{"grace period too short", func(m *manifests) {
			g := 30
			m.deployments[0].Spec.Template.Spec.TerminationGracePeriodSeconds = &g
		}, "terminationGracePeriodSeconds 30s is not more than"},
		{"drain delay raised past the grace period", func(m *manifests) {
			c := &m.deployments[0].Spec.Template.Spec.Containers[0]
			c.Env = append(c.Env, envVar{Name: "HAKIT_DRAIN_DELAY", Value: "15s"})
		}, "drain delay 15s"},
		{"drain delay unparsable", func(m *manifests) {
			c := &m.deployments[0].Spec.Template.Spec.Containers[0]
			c.Env = append(c.Env, envVar{Name: "HAKIT_SHUTDOWN_TIMEOUT", Value: "soon"})
		}, `HAKIT_SHUTDOWN_TIMEOUT="soon"`},
		{"drain shorter than readiness", func(m *manifests) {
			m.deployments[0].Spec.Template.Spec.Containers[0].ReadinessProbe.PeriodSeconds = 10
		}, "shorter than the readiness probe"},
		{"probes swapped", func(m *manifests) {
			c := &m.deployments[0].Spec.Template.Spec.Containers[0]
			c.ReadinessProbe, c.LivenessProbe = c.LivenessProbe, c.ReadinessProbe
		}, `readinessProbe on "/livez"`},
		{"no preStop", func(m *manifests) {
			m.deployments[0].Spec.Template.Spec.Containers[0].Lifecycle.PreStop = nil
		}, "no preStop hook"},
		{"maxUnavailable 1", func(m *manifests) {
			m.deployments[0].Spec.Strategy.RollingUpdate.MaxUnavailable = 1
		}, "maxUnavailable 1"},
		{"pdb blocks every drain", func(m *manifests) {
			n := 3
			m.pdbs[0].Spec.MaxUnavailable, m.pdbs[0].Spec.MinAvailable = nil, &n
		}, "minAvailable 3"},
		{"hpa on another deployment", func(m *manifests) {
			m.hpas[0].Spec.ScaleTargetRef.Name = "other"
		}, "scaleTargetRef Deployment/other"},
		{"service on the admin port", func(m *manifests) {
			m.services[0].Spec.Ports[0].TargetPort = "admin"
		}, "exposes the admin port"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := loadDir(t, ".")
			tc.mutate(m)
			errs := check(m)
			var msgs []string
			for _, err := range errs {
				msgs = append(msgs, err.Error())
			}
			all := strings.Join(msgs, "\n")
			if !strings.Contains(all, tc.want) {
				t.Errorf("want an error containing %q, got:\n%s", tc.want, all)
			}
		})
	}
}

// TestParseErrors: a file that is not YAML, or an object of a kind the
// check does not know, is an error naming the file.
func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ data, want string }{
		{"kind: Deployment\nspec: [unclosed", "bad.yaml: document 0"},
		{"apiVersion: v1\nkind: ConfigMap\n", `unexpected kind "ConfigMap"`},
		{"apiVersion: apps/v1\nkind: Deployment\nspec: {replicas: many}\n", "bad.yaml: Deployment"},
	} {
		err := (&manifests{}).parse("bad.yaml", []byte(tc.data))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parse(%q) = %v, want an error containing %q", tc.data, err, tc.want)
		}
	}
}
