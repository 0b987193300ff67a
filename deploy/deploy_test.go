package deploy

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/condaccess/condaccess/internal/peers"
)

// services are the four condaccess services, each deployed on its own.
var services = []string{"risk", "compliance", "access", "remediation"}

// serveFlags are the flags of condaccess serve that the configuration may set through
// CONDACCESS_<FLAG> (cmd/condaccess/serve.go).
var serveFlags = []string{
	"grpc-addr", "http-addr", "data-dir", "services", "risk-addr", "compliance-addr", "access-addr",
	"remediation-addr", "tls-cert", "tls-key", "tls-client-ca", "device-ca-cert", "device-ca-key", "log-format", "log-level", "stop-timeout",
	"database-url", "lease-duration",
}

// peerFlags are the serve flags that name other services (peers.Parse syntax).
var peerFlags = map[string]string{
	"CONDACCESS_RISK_ADDR": "risk", "CONDACCESS_COMPLIANCE_ADDR": "compliance",
	"CONDACCESS_ACCESS_ADDR": "access", "CONDACCESS_REMEDIATION_ADDR": "remediation",
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// manifests holds every decoded Kubernetes object, by kind.
type manifests struct {
	namespaces  []corev1.Namespace
	configMaps  []corev1.ConfigMap
	pvcs        []corev1.PersistentVolumeClaim
	deployments []appsv1.Deployment
	services    []corev1.Service
	pdbs        []policyv1.PodDisruptionBudget
}

// decodeStrict decodes one document into out, failing on any field the Kubernetes API
// type does not have (a typo such as "readinesProbe" or a misplaced field).
func decodeStrict(doc []byte, out any) error {
	return yaml.UnmarshalStrict(doc, out)
}

func loadManifests(t *testing.T) manifests {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("kubernetes", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no manifest in kubernetes/")
	}
	var m manifests
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range docSeparator.Split(string(data), -1) {
			if len(bytes.TrimSpace(stripComments([]byte(doc)))) == 0 {
				continue
			}
			where := fmt.Sprintf("%s document %d", f, i+1)
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			wantAPI := map[string]string{
				"Namespace": "v1", "ConfigMap": "v1", "PersistentVolumeClaim": "v1", "Service": "v1", "Deployment": "apps/v1",
				"PodDisruptionBudget": "policy/v1",
			}[head.Kind]
			if wantAPI == "" {
				t.Fatalf("%s: kind %q is not one this test knows: add it with its API type", where, head.Kind)
			}
			if head.APIVersion != wantAPI {
				t.Fatalf("%s: %s has apiVersion %q, want %q", where, head.Kind, head.APIVersion, wantAPI)
			}
			switch head.Kind {
			case "Namespace":
				var o corev1.Namespace
				err = decodeStrict([]byte(doc), &o)
				m.namespaces = append(m.namespaces, o)
			case "ConfigMap":
				var o corev1.ConfigMap
				err = decodeStrict([]byte(doc), &o)
				m.configMaps = append(m.configMaps, o)
			case "PersistentVolumeClaim":
				var o corev1.PersistentVolumeClaim
				err = decodeStrict([]byte(doc), &o)
				m.pvcs = append(m.pvcs, o)
			case "Deployment":
				var o appsv1.Deployment
				err = decodeStrict([]byte(doc), &o)
				m.deployments = append(m.deployments, o)
			case "Service":
				var o corev1.Service
				err = decodeStrict([]byte(doc), &o)
				m.services = append(m.services, o)
			case "PodDisruptionBudget":
				var o policyv1.PodDisruptionBudget
				err = decodeStrict([]byte(doc), &o)
				m.pdbs = append(m.pdbs, o)
			}
			if err != nil {
				t.Fatalf("%s: strict decode into the %s API type: %v", where, head.Kind, err)
			}
		}
	}
	return m
}

func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

func TestDecodeStrictRejectsTypos(t *testing.T) {
	doc := []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replica: 1\n")
	var d appsv1.Deployment
	if err := decodeStrict(doc, &d); err == nil {
		t.Fatal("a misspelt field (replica) decoded without error: the manifest test would miss typos")
	}
}

func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t)

	if len(m.namespaces) != 1 || m.namespaces[0].Name != "condaccess" {
		t.Errorf("want one Namespace condaccess, got %d", len(m.namespaces))
	}
	configMaps := map[string]corev1.ConfigMap{}
	for _, c := range m.configMaps {
		configMaps[c.Name] = c
		for k := range c.Data {
			if !strings.HasPrefix(k, "CONDACCESS_") {
				continue
			}
			flag := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(k, "CONDACCESS_"), "_", "-"))
			if !slices.Contains(serveFlags, flag) {
				t.Errorf("ConfigMap %s sets %s, but serve has no --%s", c.Name, k, flag)
			}
		}
	}
	pvcs := map[string]bool{}
	for _, p := range m.pvcs {
		pvcs[p.Name] = true
	}

	deployments := map[string]appsv1.Deployment{}
	for _, d := range m.deployments {
		deployments[d.Name] = d
		t.Run("Deployment "+d.Name, func(t *testing.T) { checkDeployment(t, d, configMaps, pvcs) })
	}
	for _, s := range services {
		if _, ok := deployments[s]; !ok {
			t.Errorf("no Deployment for the %s service", s)
		}
	}

	for _, s := range m.services {
		t.Run("Service "+s.Name, func(t *testing.T) {
			var target *appsv1.Deployment
			for _, d := range m.deployments {
				if selects(s.Spec.Selector, d.Spec.Template.Labels) {
					target = &d
				}
			}
			if target == nil {
				t.Fatalf("selector %v matches no Deployment's pods", s.Spec.Selector)
			}
			ports := map[string]bool{}
			for _, c := range target.Spec.Template.Spec.Containers {
				for _, p := range c.Ports {
					ports[p.Name] = true
				}
			}
			for _, p := range s.Spec.Ports {
				if p.TargetPort.StrVal != "" && !ports[p.TargetPort.StrVal] {
					t.Errorf("port %s targets %q, which no container of %s names", p.Name, p.TargetPort.StrVal, target.Name)
				}
			}
			if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool {
				return p.Port == 7400 && p.AppProtocol != nil && *p.AppProtocol == "grpc"
			}) {
				t.Error("no gRPC port 7400 (appProtocol grpc)")
			}
		})
	}
	for _, name := range services {
		if !slices.ContainsFunc(m.services, func(s corev1.Service) bool { return s.Name == name }) {
			t.Errorf("no Service %s (clients dial %s.condaccess.svc:7400)", name, name)
		}
	}
	checkPDBs(t, m)
	checkPeerAddresses(t, m)
}

// checkPDBs: every service keeps at least one replica through voluntary disruptions
// (node drains), and the budget still lets one pod go.
func checkPDBs(t *testing.T, m manifests) {
	for _, d := range m.deployments {
		var pdb *policyv1.PodDisruptionBudget
		for i, p := range m.pdbs {
			if p.Namespace == d.Namespace && p.Spec.Selector != nil && selects(p.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
				pdb = &m.pdbs[i]
			}
		}
		if pdb == nil {
			t.Errorf("no PodDisruptionBudget selects the pods of %s", d.Name)
			continue
		}
		if mu := pdb.Spec.MinAvailable; mu == nil || mu.IntValue() < 1 || d.Spec.Replicas == nil || int32(mu.IntValue()) >= *d.Spec.Replicas {
			t.Errorf("PodDisruptionBudget %s: want 1 <= minAvailable < replicas, so that a drain keeps one replica and can still move one", pdb.Name)
		}
	}
}

// checkPeerAddresses: each peer address in the configuration parses (the serve flag's
// syntax) and, as a dns:/// target, names a headless Service in the namespace that
// selects that service's pods, so that DNS answers with every replica.
func checkPeerAddresses(t *testing.T, m manifests) {
	for _, c := range m.configMaps {
		for k, svc := range peerFlags {
			v, ok := c.Data[k]
			if !ok {
				continue
			}
			tgt, err := peers.Parse(v)
			if err != nil {
				t.Errorf("ConfigMap %s: %s: %v", c.Name, k, err)
				continue
			}
			if tgt.DNS() == "" {
				t.Errorf("ConfigMap %s: %s=%s is not a dns:/// target: replicas would not be found", c.Name, k, v)
				continue
			}
			host, _, _ := strings.Cut(tgt.DNS(), ":")
			name, rest, _ := strings.Cut(host, ".")
			if !strings.HasPrefix(rest, "condaccess.svc") {
				t.Errorf("%s=%s: not a Service of the condaccess namespace", k, v)
			}
			i := slices.IndexFunc(m.services, func(s corev1.Service) bool { return s.Name == name })
			if i < 0 {
				t.Errorf("%s=%s: no Service %s", k, v, name)
				continue
			}
			s := m.services[i]
			if s.Spec.ClusterIP != corev1.ClusterIPNone {
				t.Errorf("%s=%s: Service %s is not headless (clusterIP: None): DNS would answer with one virtual IP, not the replicas", k, v, name)
			}
			if s.Spec.Selector["app.kubernetes.io/name"] != svc {
				t.Errorf("%s=%s: Service %s selects %v, not the %s pods", k, v, name, s.Spec.Selector, svc)
			}
		}
	}
}

func checkDeployment(t *testing.T, d appsv1.Deployment, configMaps map[string]corev1.ConfigMap, pvcs map[string]bool) {
	if d.Namespace != "condaccess" {
		t.Errorf("namespace %q", d.Namespace)
	}
	if !selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
		t.Errorf("selector %v does not match the pod labels %v", d.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
	}
	// Replicas on PostgreSQL: at least two, replaced one at a time without dropping
	// below the desired count.
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Error("want at least 2 replicas")
	}
	if ru := d.Spec.Strategy.RollingUpdate; d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Error("want the RollingUpdate strategy with maxUnavailable 0")
	}
	pod := d.Spec.Template.Spec
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Error("pod does not set runAsNonRoot")
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
		if v.PersistentVolumeClaim != nil && !pvcs[v.PersistentVolumeClaim.ClaimName] {
			t.Errorf("volume %s claims %q, which no manifest defines", v.Name, v.PersistentVolumeClaim.ClaimName)
		}
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	if want := []string{"serve", "--services", d.Name}; len(c.Args) < 3 || !slices.Equal(c.Args[:3], want) {
		t.Errorf("args %q, want them to start with %q", c.Args, want)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
	}{{"readiness", c.ReadinessProbe}, {"liveness", c.LivenessProbe}, {"startup", c.StartupProbe}} {
		if p.probe == nil {
			t.Errorf("no %s probe", p.name)
			continue
		}
		switch {
		case p.probe.GRPC != nil:
			if p.probe.GRPC.Port != 7400 {
				t.Errorf("%s probe checks port %d, not gRPC 7400", p.name, p.probe.GRPC.Port)
			}
		case p.probe.Exec != nil:
			cmd := p.probe.Exec.Command
			if len(cmd) < 2 || filepath.Base(cmd[0]) != "condaccess" || cmd[1] != "health" {
				t.Errorf("%s probe runs %q, want condaccess health (gRPC health)", p.name, cmd)
			}
		default:
			t.Errorf("%s probe is not a gRPC health check", p.name)
		}
	}
	if c.SecurityContext == nil || c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
		t.Error("container allows privilege escalation")
	}
	if c.Resources.Requests.Memory().IsZero() {
		t.Error("no memory request")
	}
	// The database URL (with its password) comes from a Secret, never a literal.
	dbURL := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "CONDACCESS_DATABASE_URL" })
	switch {
	case dbURL < 0:
		t.Error("no CONDACCESS_DATABASE_URL: replicas need the shared PostgreSQL store")
	case c.Env[dbURL].Value != "" || c.Env[dbURL].ValueFrom == nil || c.Env[dbURL].ValueFrom.SecretKeyRef == nil:
		t.Error("CONDACCESS_DATABASE_URL is not taken from a Secret (secretKeyRef)")
	}
	for _, e := range c.EnvFrom {
		if e.ConfigMapRef == nil {
			continue
		}
		if _, ok := configMaps[e.ConfigMapRef.Name].Data["CONDACCESS_DATABASE_URL"]; ok {
			t.Errorf("ConfigMap %s holds the database URL: it belongs in a Secret", e.ConfigMapRef.Name)
		}
	}
	for _, e := range c.EnvFrom {
		if e.ConfigMapRef != nil {
			if _, ok := configMaps[e.ConfigMapRef.Name]; !ok {
				t.Errorf("envFrom names ConfigMap %q, which no manifest defines", e.ConfigMapRef.Name)
			}
		}
	}
	mounts := map[string]string{}
	for _, vm := range c.VolumeMounts {
		if _, ok := volumes[vm.Name]; !ok {
			t.Errorf("mount %s names no volume", vm.Name)
		}
		mounts[vm.MountPath] = vm.Name
	}
	// The configuration's paths must exist in the container.
	for _, cm := range c.EnvFrom {
		if cm.ConfigMapRef == nil {
			continue
		}
		for k, v := range configMaps[cm.ConfigMapRef.Name].Data {
			if strings.HasPrefix(v, "/") && strings.HasPrefix(k, "CONDACCESS_") {
				if _, ok := mounts[filepath.Dir(v)]; !ok && mounts[v] == "" {
					t.Errorf("%s=%s is not under a mounted volume", k, v)
				}
			}
		}
	}
}

// selects reports whether a non-empty label selector matches the pod labels.
func selects(sel, pod map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if pod[k] != v {
			return false
		}
	}
	return true
}

func TestComposeFile(t *testing.T) {
	data, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Image       string         `json:"image"`
			Command     []string       `json:"command"`
			Entrypoint  []string       `json:"entrypoint"`
			Environment map[string]any `json:"environment"`
			Volumes     []string       `json:"volumes"`
			DependsOn   any            `json:"depends_on"`
			Healthcheck *struct {
				Test []string `json:"test"`
			} `json:"healthcheck"`
			Deploy *struct {
				Replicas int `json:"replicas"`
			} `json:"deploy"`
		} `json:"services"`
		Volumes map[string]any `json:"volumes"`
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatal(err)
	}
	for _, name := range append(slices.Clone(services), "agent", "otel-collector", "jaeger", "certs", "postgres") {
		if _, ok := compose.Services[name]; !ok {
			t.Errorf("compose has no %s service", name)
		}
	}
	for _, name := range services {
		s := compose.Services[name]
		if want := []string{"serve", "--services", name}; !slices.Equal(s.Command, want) {
			t.Errorf("%s runs %q, want %q", name, s.Command, want)
		}
		if s.Healthcheck == nil || !slices.Contains(s.Healthcheck.Test, "health") {
			t.Errorf("%s has no gRPC health check", name)
		}
		if s.Environment["OTEL_EXPORTER_OTLP_ENDPOINT"] != "http://otel-collector:4317" {
			t.Errorf("%s does not export traces to the collector", name)
		}
		if s.Deploy == nil || s.Deploy.Replicas < 2 {
			t.Errorf("%s does not run replicas (deploy.replicas >= 2)", name)
		}
		if u, _ := s.Environment["CONDACCESS_DATABASE_URL"].(string); !strings.HasPrefix(u, "postgres://") || !strings.Contains(u, "@postgres:5432/") {
			t.Errorf("%s: CONDACCESS_DATABASE_URL %q does not point at the postgres service", name, u)
		}
		for k, peer := range peerFlags {
			v, _ := s.Environment[k].(string)
			tgt, err := peers.Parse(v)
			if err != nil {
				t.Errorf("%s: %s: %v", name, k, err)
				continue
			}
			// Docker's DNS answers a service name with every replica.
			if tgt.DNS() != peer+":7400" {
				t.Errorf("%s: %s=%s, want dns:///%s:7400 (every replica of %s)", name, k, v, peer, peer)
			}
		}
		for k := range s.Environment {
			if flag, ok := strings.CutPrefix(k, "CONDACCESS_"); ok {
				if f := strings.ToLower(strings.ReplaceAll(flag, "_", "-")); !slices.Contains(serveFlags, f) {
					t.Errorf("%s sets %s, but serve has no --%s", name, k, f)
				}
			}
		}
	}
	for _, s := range compose.Services {
		for _, v := range s.Volumes {
			vol, _, _ := strings.Cut(v, ":")
			if !strings.HasPrefix(vol, ".") && !strings.HasPrefix(vol, "/") {
				if _, ok := compose.Volumes[vol]; !ok {
					t.Errorf("volume %q is not declared", vol)
				}
			}
		}
	}
	if _, err := os.Stat("otel-collector.yaml"); err != nil {
		t.Errorf("collector configuration: %v", err)
	}
}

func TestOTelCollectorConfig(t *testing.T) {
	data, err := os.ReadFile("otel-collector.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Receivers map[string]any `json:"receivers"`
		Exporters map[string]any `json:"exporters"`
		Service   struct {
			Pipelines map[string]struct {
				Receivers []string `json:"receivers"`
				Exporters []string `json:"exporters"`
			} `json:"pipelines"`
		} `json:"service"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	traces, ok := cfg.Service.Pipelines["traces"]
	if !ok {
		t.Fatal("no traces pipeline")
	}
	for _, r := range traces.Receivers {
		if _, ok := cfg.Receivers[r]; !ok {
			t.Errorf("traces pipeline uses undeclared receiver %s", r)
		}
	}
	for _, e := range traces.Exporters {
		if _, ok := cfg.Exporters[e]; !ok {
			t.Errorf("traces pipeline uses undeclared exporter %s", e)
		}
	}
	if !slices.Contains(traces.Exporters, "otlp/jaeger") {
		t.Error("traces are not sent to Jaeger")
	}
}

func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var froms, users []string
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			froms = append(froms, f[1])
			users = nil // USER counts in the final stage only
		case "USER":
			users = append(users, f[1])
		}
	}
	if len(froms) < 2 {
		t.Errorf("want a multi-stage build, got %d stage(s)", len(froms))
	}
	if len(users) == 0 {
		t.Fatal("the final stage sets no USER: it would run as root")
	}
	if u := strings.Split(users[len(users)-1], ":")[0]; u == "0" || u == "root" {
		t.Errorf("the final stage runs as %s", u)
	}
	if !strings.Contains(string(data), "CGO_ENABLED=0") {
		t.Error("the binary is not built static (CGO_ENABLED=0)")
	}
	for _, bin := range []string{"./cmd/condaccess", "./cmd/condaccess-agent"} {
		if !strings.Contains(string(data), bin+" ") && !strings.Contains(string(data), bin+"\n") {
			t.Errorf("the image does not build %s", bin)
		}
	}
}
