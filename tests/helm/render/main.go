// Command render renders a Helm chart the way `helm template` does, without the helm binary (which cannot be
// installed here), for the chart tests in tests/python/test_helm.py.
//
// It is faithful because it runs the same machinery Helm's engine (helm.sh/helm/v3/pkg/engine) runs: Go's
// text/template with the sprig function library (sprig.TxtFuncMap, minus `env` and `expandenv`, as Helm removes
// them), plus Helm's own functions re-implemented after pkg/engine/funcs.go and engine.go: include (with the same
// recursion guard), tpl, required, fail, toYaml/mustToYaml/fromYaml/fromYamlArray, toJson/mustToJson/fromJson/
// fromJsonArray, toToml and a `lookup` that returns an empty map (as in `helm template`). The render context is Helm's: .Values (the
// chart's values.yaml coalesced with -f files, later files winning, null deleting a key), .Release, .Chart (from
// Chart.yaml), .Capabilities (KubeVersion, APIVersions.Has), .Files (Get, GetBytes, Glob, AsConfig, AsSecrets,
// Lines) and .Template (Name, BasePath). Templates are parsed into one template set so that `define`s are shared;
// files whose base name starts with `_` are partials and are not rendered; "<no value>" is removed from the
// output as Helm does; with -strict, a missing map key is an error (Helm's lint mode).
//
// As Helm, the coalesced values are validated against the chart's values.schema.json with gojsonschema (v1.2.0,
// Helm 3's validator), and Chart.yaml's kubeVersion constraint is checked against -kube-version (Masterminds
// semver, as Helm).
//
// Not reproduced: subcharts and dependencies, `.helmignore` beyond simple glob lines, hook ordering.
//
// Output (stdout, JSON): {"values": {...}, "manifests": [{"source": "chart/templates/x.yaml", "content": "..."}],
// "notes": "..."}, one manifest per YAML document, split and trimmed as Helm's releaseutil.SplitManifests does. Any template or values error: a message on stderr and exit status 1.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/template"

	"github.com/BurntSushi/toml"
	"github.com/Masterminds/semver/v3"
	"github.com/Masterminds/sprig/v3"
	"github.com/gobwas/glob"
	"github.com/xeipuuv/gojsonschema"
	"sigs.k8s.io/yaml"
)

// recursionMaxNums is Helm's limit on nested includes of one template.
const recursionMaxNums = 1000

// sep splits a rendered file into YAML documents, as Helm's releaseutil.SplitManifests.
var sep = regexp.MustCompile("(?:^|\\s*\n)---\\s*")

type valueFiles []string

func (v *valueFiles) String() string     { return strings.Join(*v, ",") }
func (v *valueFiles) Set(s string) error { *v = append(*v, s); return nil }

// Metadata is .Chart: the fields of Helm's chart.Metadata that Chart.yaml may set.
type Metadata struct {
	Name         string            `json:"name,omitempty"`
	Home         string            `json:"home,omitempty"`
	Sources      []string          `json:"sources,omitempty"`
	Version      string            `json:"version,omitempty"`
	Description  string            `json:"description,omitempty"`
	Keywords     []string          `json:"keywords,omitempty"`
	Maintainers  []json.RawMessage `json:"maintainers,omitempty"`
	Icon         string            `json:"icon,omitempty"`
	APIVersion   string            `json:"apiVersion,omitempty"`
	Condition    string            `json:"condition,omitempty"`
	Tags         string            `json:"tags,omitempty"`
	AppVersion   string            `json:"appVersion,omitempty"`
	Deprecated   bool              `json:"deprecated,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	KubeVersion  string            `json:"kubeVersion,omitempty"`
	Dependencies []json.RawMessage `json:"dependencies,omitempty"`
	Type         string            `json:"type,omitempty"`
}

// KubeVersion is .Capabilities.KubeVersion.
type KubeVersion struct {
	Version string
	Major   string
	Minor   string
}

func (kv *KubeVersion) String() string     { return kv.Version }
func (kv *KubeVersion) GitVersion() string { return kv.Version }

// VersionSet is .Capabilities.APIVersions.
type VersionSet []string

// Has reports whether an apiVersion (or apiVersion/Kind) is available.
func (v VersionSet) Has(apiVersion string) bool {
	for _, x := range v {
		if x == apiVersion {
			return true
		}
	}
	return false
}

// Capabilities is .Capabilities.
type Capabilities struct {
	KubeVersion KubeVersion
	APIVersions VersionSet
	HelmVersion map[string]string
}

// Files is .Files: the chart's non-template files, by path relative to the chart root.
type Files map[string][]byte

func (f Files) GetBytes(name string) []byte { return f[name] }
func (f Files) Get(name string) string      { return string(f[name]) }

// Glob returns the files whose path matches pattern (gobwas/glob with '/' as separator, as Helm).
func (f Files) Glob(pattern string) Files {
	g, err := glob.Compile(pattern, '/')
	if err != nil {
		g, _ = glob.Compile("**")
	}
	nf := Files{}
	for name, contents := range f {
		if g.Match(name) {
			nf[name] = contents
		}
	}
	return nf
}

func (f Files) AsConfig() string {
	if f == nil {
		return ""
	}
	m := make(map[string]string)
	for k, v := range f {
		m[path.Base(k)] = string(v)
	}
	return toYAML(m)
}

func (f Files) AsSecrets() string {
	if f == nil {
		return ""
	}
	m := make(map[string]string)
	for k, v := range f {
		m[path.Base(k)] = base64.StdEncoding.EncodeToString(v)
	}
	return toYAML(m)
}

func (f Files) Lines(p string) []string {
	if f == nil || f[p] == nil {
		return []string{}
	}
	s := string(f[p])
	if s[len(s)-1] == '\n' {
		s = s[:len(s)-1]
	}
	return strings.Split(s, "\n")
}

// --- Helm's extra template functions (pkg/engine/funcs.go) ---

func toYAML(v interface{}) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(data), "\n")
}

func mustToYAML(v interface{}) (string, error) {
	data, err := yaml.Marshal(v)
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(string(data), "\n"), nil
}

func mustToJSON(v interface{}) (string, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return string(data), nil
}

func fromYAML(str string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := yaml.Unmarshal([]byte(str), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func fromYAMLArray(str string) []interface{} {
	a := []interface{}{}
	if err := yaml.Unmarshal([]byte(str), &a); err != nil {
		a = []interface{}{err.Error()}
	}
	return a
}

func toTOML(v interface{}) string {
	b := bytes.NewBuffer(nil)
	if err := toml.NewEncoder(b).Encode(v); err != nil {
		return err.Error()
	}
	return b.String()
}

func toJSON(v interface{}) string {
	data, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(data)
}

func fromJSON(str string) map[string]interface{} {
	m := make(map[string]interface{})
	if err := json.Unmarshal([]byte(str), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func fromJSONArray(str string) []interface{} {
	a := []interface{}{}
	if err := json.Unmarshal([]byte(str), &a); err != nil {
		a = []interface{}{err.Error()}
	}
	return a
}

func warnWrap(warn string) string { return "HELM_ERR_START" + warn + "HELM_ERR_END" }

func funcMap() template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	extra := template.FuncMap{
		"toToml":        toTOML,
		"toYaml":        toYAML,
		"mustToYaml":    mustToYAML,
		"mustToJson":    mustToJSON,
		"fromYaml":      fromYAML,
		"fromYamlArray": fromYAMLArray,
		"toJson":        toJSON,
		"fromJson":      fromJSON,
		"fromJsonArray": fromJSONArray,
		// Late-bound below, as in Helm.
		"include":  func(string, interface{}) string { return "not implemented" },
		"tpl":      func(string, interface{}) interface{} { return "not implemented" },
		"required": func(string, interface{}) (interface{}, error) { return "not implemented", nil },
		// `helm template` has no cluster: lookup finds nothing.
		"lookup": func(string, string, string, string) (map[string]interface{}, error) {
			return map[string]interface{}{}, nil
		},
	}
	for k, v := range extra {
		f[k] = v
	}
	return f
}

func includeFun(t *template.Template, includedNames map[string]int) func(string, interface{}) (string, error) {
	return func(name string, data interface{}) (string, error) {
		var buf strings.Builder
		if v, ok := includedNames[name]; ok {
			if v > recursionMaxNums {
				return "", fmt.Errorf("rendering template has a nested reference name: %s: unable to execute template", name)
			}
			includedNames[name]++
		} else {
			includedNames[name] = 1
		}
		err := t.ExecuteTemplate(&buf, name, data)
		includedNames[name]--
		return buf.String(), err
	}
}

func tplFun(parent *template.Template, includedNames map[string]int, strict bool) func(string, interface{}) (string, error) {
	return func(tpl string, vals interface{}) (string, error) {
		t, err := parent.Clone()
		if err != nil {
			return "", fmt.Errorf("cannot clone template: %w", err)
		}
		if strict {
			t.Option("missingkey=error")
		} else {
			t.Option("missingkey=zero")
		}
		t.Funcs(template.FuncMap{
			"include": includeFun(t, includedNames),
			"tpl":     tplFun(t, includedNames, strict),
		})
		t, err = t.New(parent.Name()).Parse(tpl)
		if err != nil {
			return "", fmt.Errorf("cannot parse template %q: %w", tpl, err)
		}
		var buf strings.Builder
		if err := t.Execute(&buf, vals); err != nil {
			return "", fmt.Errorf("error during tpl function execution for %q: %w", tpl, err)
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
}

func initFuncMap(t *template.Template, strict bool) {
	f := funcMap()
	includedNames := make(map[string]int)
	f["include"] = includeFun(t, includedNames)
	f["tpl"] = tplFun(t, includedNames, strict)
	f["required"] = func(warn string, val interface{}) (interface{}, error) {
		if val == nil {
			return val, errors.New(warnWrap(warn))
		} else if s, ok := val.(string); ok && s == "" {
			return val, errors.New(warnWrap(warn))
		}
		return val, nil
	}
	f["fail"] = func(msg string) (string, error) { return "", errors.New(warnWrap(msg)) }
	t.Funcs(f)
}

// --- values (pkg/chartutil/coalesce.go, simplified to one chart without subcharts) ---

func readValues(data []byte) (map[string]interface{}, error) {
	vals := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &vals); err != nil {
		return nil, err
	}
	if vals == nil {
		vals = map[string]interface{}{}
	}
	return vals, nil
}

// mergeMaps merges b into a, as `helm template -f a -f b` does with its value files.
func mergeMaps(a, b map[string]interface{}) map[string]interface{} {
	out := make(map[string]interface{}, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if vm, ok := v.(map[string]interface{}); ok {
			if bv, ok := out[k]; ok {
				if bvm, ok := bv.(map[string]interface{}); ok {
					out[k] = mergeMaps(bvm, vm)
					continue
				}
			}
		}
		out[k] = v
	}
	return out
}

// coalesce lays the user's values over the chart's defaults: user values win, a user null deletes the key.
func coalesce(user, defaults map[string]interface{}) map[string]interface{} {
	out := make(map[string]interface{}, len(defaults))
	for k, v := range defaults {
		out[k] = v
	}
	for k, v := range user {
		if v == nil {
			delete(out, k)
			continue
		}
		um, uok := v.(map[string]interface{})
		dm, dok := out[k].(map[string]interface{})
		if uok && dok {
			out[k] = coalesce(um, dm)
		} else {
			out[k] = v
		}
	}
	return out
}

// validateAgainstSchema is Helm's chartutil.ValidateAgainstSingleSchema.
func validateAgainstSchema(values map[string]interface{}, schemaJSON []byte) (reterr error) {
	defer func() {
		if r := recover(); r != nil {
			reterr = fmt.Errorf("unable to validate schema: %s", r)
		}
	}()
	valuesData, err := yaml.Marshal(values)
	if err != nil {
		return err
	}
	valuesJSON, err := yaml.YAMLToJSON(valuesData)
	if err != nil {
		return err
	}
	if bytes.Equal(valuesJSON, []byte("null")) {
		valuesJSON = []byte("{}")
	}
	result, err := gojsonschema.Validate(gojsonschema.NewBytesLoader(schemaJSON), gojsonschema.NewBytesLoader(valuesJSON))
	if err != nil {
		return err
	}
	if !result.Valid() {
		var sb strings.Builder
		for _, desc := range result.Errors() {
			sb.WriteString(fmt.Sprintf("- %s\n", desc))
		}
		return errors.New(sb.String())
	}
	return nil
}

// --- chart loading ---

func loadIgnore(root string) []string {
	data, err := os.ReadFile(filepath.Join(root, ".helmignore"))
	if err != nil {
		return nil
	}
	var rules []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			rules = append(rules, line)
		}
	}
	return rules
}

func ignored(rules []string, rel string, isDir bool) bool {
	for _, r := range rules {
		dirOnly := strings.HasSuffix(r, "/")
		r = strings.TrimSuffix(r, "/")
		if dirOnly && !isDir {
			continue
		}
		if ok, _ := path.Match(r, rel); ok {
			return true
		}
		if ok, _ := path.Match(r, path.Base(rel)); ok {
			return true
		}
	}
	return false
}

type chart struct {
	meta      Metadata
	schema    []byte
	values    map[string]interface{}
	templates map[string]string // "<chart name>/templates/x.yaml" -> text
	files     Files
}

func loadChart(root string) (*chart, error) {
	c := &chart{templates: map[string]string{}, files: Files{}}
	metaBytes, err := os.ReadFile(filepath.Join(root, "Chart.yaml"))
	if err != nil {
		return nil, err
	}
	if err := yaml.UnmarshalStrict(metaBytes, &c.meta); err != nil {
		return nil, fmt.Errorf("Chart.yaml: %w", err)
	}
	if c.meta.APIVersion != "v2" || c.meta.Name == "" || c.meta.Version == "" {
		return nil, fmt.Errorf("Chart.yaml: apiVersion v2, name and version are required")
	}
	valBytes, err := os.ReadFile(filepath.Join(root, "values.yaml"))
	if err != nil {
		return nil, err
	}
	if c.values, err = readValues(valBytes); err != nil {
		return nil, fmt.Errorf("values.yaml: %w", err)
	}
	if c.schema, err = os.ReadFile(filepath.Join(root, "values.schema.json")); err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	rules := loadIgnore(root)
	err = walkFollowingLinks(root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if rel == "." {
			return nil
		}
		if ignored(rules, rel, info.IsDir()) {
			if info.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if info.IsDir() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		switch {
		case strings.HasPrefix(rel, "templates/"):
			c.templates[path.Join(c.meta.Name, rel)] = string(data)
		case rel == "Chart.yaml", rel == "values.yaml", rel == "values.schema.json", rel == "Chart.lock",
			strings.HasPrefix(rel, "charts/"):
		default:
			c.files[rel] = data
		}
		return nil
	})
	return c, err
}

// walkFollowingLinks is filepath.Walk, but descends into symlinked directories as Helm's chart loader does
// (the chart's files/policies links to the repository's policies/, so there is one copy of the demo set).
func walkFollowingLinks(root string, fn filepath.WalkFunc) error {
	info, err := os.Stat(root)
	if err != nil {
		return fn(root, nil, err)
	}
	return walkFollowing(root, info, fn)
}

func walkFollowing(p string, info os.FileInfo, fn filepath.WalkFunc) error {
	if err := fn(p, info, nil); err != nil {
		if info.IsDir() && err == filepath.SkipDir {
			return nil
		}
		return err
	}
	if !info.IsDir() {
		return nil
	}
	entries, err := os.ReadDir(p)
	if err != nil {
		return fn(p, info, err)
	}
	for _, e := range entries {
		child := filepath.Join(p, e.Name())
		ci, err := os.Stat(child) // follows symlinks
		if err != nil {
			return err
		}
		if err := walkFollowing(child, ci, fn); err != nil {
			return err
		}
	}
	return nil
}

func main() {
	var files valueFiles
	chartDir := flag.String("chart", "", "chart directory")
	name := flag.String("name", "lakegate", "release name")
	namespace := flag.String("namespace", "default", "release namespace")
	kubeVersion := flag.String("kube-version", "v1.31.0", "Kubernetes version for .Capabilities")
	strict := flag.Bool("strict", false, "fail on a missing map key (helm lint's strict mode)")
	flag.Var(&files, "f", "values file (repeatable; later files win)")
	flag.Parse()
	if *chartDir == "" {
		fmt.Fprintln(os.Stderr, "usage: render -chart DIR [-f values.yaml]... [-name N] [-namespace NS]")
		os.Exit(2)
	}
	if err := run(*chartDir, files, *name, *namespace, *kubeVersion, *strict); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", strings.NewReplacer("HELM_ERR_START", "", "HELM_ERR_END", "").Replace(err.Error()))
		os.Exit(1)
	}
}

func run(chartDir string, files []string, name, namespace, kubeVersion string, strict bool) error {
	c, err := loadChart(chartDir)
	if err != nil {
		return err
	}
	user := map[string]interface{}{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		v, err := readValues(data)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		user = mergeMaps(user, v)
	}
	values := coalesce(user, c.values)
	if c.schema != nil {
		if err := validateAgainstSchema(values, c.schema); err != nil {
			return fmt.Errorf("values don't meet the specifications of the schema(s) in the following chart(s):\n%s:\n%s",
				c.meta.Name, err)
		}
	}

	kv := strings.TrimPrefix(kubeVersion, "v")
	parts := strings.SplitN(kv, ".", 3)
	if len(parts) < 2 {
		return fmt.Errorf("bad -kube-version %q", kubeVersion)
	}
	if c.meta.KubeVersion != "" {
		constraint, err := semver.NewConstraint(c.meta.KubeVersion)
		if err != nil {
			return fmt.Errorf("Chart.yaml: kubeVersion %q: %w", c.meta.KubeVersion, err)
		}
		v, err := semver.NewVersion(kv)
		if err != nil {
			return fmt.Errorf("bad -kube-version %q: %w", kubeVersion, err)
		}
		if !constraint.Check(v) {
			return fmt.Errorf("chart requires kubeVersion: %s which is incompatible with Kubernetes v%s",
				c.meta.KubeVersion, kv)
		}
	}
	caps := &Capabilities{
		KubeVersion: KubeVersion{Version: "v" + kv, Major: parts[0], Minor: parts[1]},
		APIVersions: VersionSet{"v1", "apps/v1", "autoscaling/v2", "policy/v1", "networking.k8s.io/v1", "batch/v1"},
		HelmVersion: map[string]string{"version": "v3.16.0"},
	}
	top := map[string]interface{}{
		"Chart":        &c.meta,
		"Capabilities": caps,
		"Release": map[string]interface{}{
			"Name": name, "Namespace": namespace, "IsUpgrade": false, "IsInstall": true, "Revision": 1, "Service": "Helm",
		},
		"Values": values,
		"Files":  c.files,
	}

	// One template set, as Helm's engine: all defines visible to all files.
	t := template.New("gotpl")
	if strict {
		t.Option("missingkey=error")
	} else {
		t.Option("missingkey=zero")
	}
	initFuncMap(t, strict)
	names := make([]string, 0, len(c.templates))
	for n := range c.templates {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if _, err := t.New(n).Parse(c.templates[n]); err != nil {
			return fmt.Errorf("parse error in %q: %w", n, err)
		}
	}

	type manifest struct {
		Source  string `json:"source"`
		Content string `json:"content"`
	}
	out := struct {
		Values    map[string]interface{} `json:"values"`
		Manifests []manifest             `json:"manifests"`
		Notes     string                 `json:"notes"`
	}{Values: values, Manifests: []manifest{}}
	for _, n := range names {
		if strings.HasPrefix(path.Base(n), "_") {
			continue
		}
		vals := make(map[string]interface{}, len(top)+1)
		for k, v := range top {
			vals[k] = v
		}
		vals["Template"] = map[string]interface{}{"Name": n, "BasePath": path.Join(c.meta.Name, "templates")}
		var buf strings.Builder
		if err := t.ExecuteTemplate(&buf, n, vals); err != nil {
			return fmt.Errorf("render error in %q: %w", n, err)
		}
		text := strings.ReplaceAll(buf.String(), "<no value>", "")
		if strings.HasSuffix(n, "NOTES.txt") {
			out.Notes = text
			continue
		}
		// As `helm template`: each document trimmed, empty ones dropped.
		for _, doc := range sep.Split(text, -1) {
			if doc = strings.TrimSpace(doc); doc != "" {
				out.Manifests = append(out.Manifests, manifest{Source: n, Content: doc})
			}
		}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	return enc.Encode(out)
}
