{{/* config.toml, rendered from .Values.config and .Values.extraConfig. */}}
{{- define "lakegate.configToml" -}}
# lakegate.toml, rendered by the lakegate chart from its values (see docs/configuration.md).
# Listeners and their TLS files are set by LAKEGATE__* environment overrides in the Deployment.
data_dir = {{ include "lakegate.dataDir" . | toJson }}

[policy]
dir = {{ include "lakegate.policyDir" . | toJson }}
reload_interval_seconds = {{ include "lakegate.toml" .Values.config.policy.reloadIntervalSeconds }}

[identity]
{{- if not (kindIs "invalid" .Values.config.identity.devIssuer) }}
dev_issuer = {{ include "lakegate.toml" .Values.config.identity.devIssuer }}
{{- end }}
max_token_bytes = {{ include "lakegate.toml" .Values.config.identity.maxTokenBytes }}
{{- range .Values.config.identity.issuers }}

[[identity.issuers]]
{{- $issuer := . }}
{{- range $key := keys $issuer | sortAlpha }}
{{ $key }} = {{ include "lakegate.toml" (index $issuer $key) }}
{{- end }}
{{- end }}

[audit]
stdout = {{ include "lakegate.toml" .Values.config.audit.stdout }}
max_file_bytes = {{ include "lakegate.toml" .Values.config.audit.maxFileBytes }}
queue_capacity = {{ include "lakegate.toml" .Values.config.audit.queueCapacity }}
enqueue_timeout_ms = {{ include "lakegate.toml" .Values.config.audit.enqueueTimeoutMs }}
fail_open = {{ include "lakegate.toml" .Values.config.audit.failOpen }}
durability = {{ .Values.config.audit.durability | toJson }}
batch_window_ms = {{ include "lakegate.toml" .Values.config.audit.batchWindowMs }}

[shutdown]
grace = {{ printf "%ds" (int .Values.config.shutdown.graceSeconds) | toJson }}
{{- if .Values.sparkConnect.enabled }}

[[sql.spark]]
name = {{ .Values.sparkConnect.name | toJson }}
remote = {{ required "sparkConnect.remote is required" .Values.sparkConnect.remote | toJson }}
token_file = "/etc/lakegate/spark-connect/token"
{{- if .Values.sparkConnect.tls }}
tls = true
{{- if .Values.sparkConnect.caSecret }}
ca_file = "/etc/lakegate/spark-connect-ca/ca.crt"
{{- end }}
{{- if .Values.sparkConnect.clientCertSecret }}
client_cert = "/etc/lakegate/spark-connect-client/tls.crt"
client_key = "/etc/lakegate/spark-connect-client/tls.key"
{{- end }}
{{- else if .Values.sparkConnect.caSecret }}
{{- fail "sparkConnect.caSecret needs sparkConnect.tls" }}
{{- else if .Values.sparkConnect.clientCertSecret }}
{{- fail "sparkConnect.clientCertSecret needs sparkConnect.tls" }}
{{- end }}
{{- end }}
{{- with .Values.extraConfig }}

# extraConfig
{{- . | trimSuffix "\n" | nindent 0 }}
{{- end }}
{{ end -}}
