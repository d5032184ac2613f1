{{/* Names and labels. */}}
{{- define "uaprof.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "uaprof.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "uaprof.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "uaprof.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector of one tier: call with (dict "root" $ "tier" "notifier"). */}}
{{- define "uaprof.selector" -}}
app.kubernetes.io/name: {{ include "uaprof.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .tier }}
{{- end -}}

{{- define "uaprof.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "uaprof.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "uaprof.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The content tier's gRPC endpoint, for the notifiers' content_url. */}}
{{- define "uaprof.contentGrpcUrl" -}}
{{- printf "http://%s-content.%s.svc:%d" (include "uaprof.fullname" .) .Release.Namespace (int .Values.content.ports.grpc) -}}
{{- end -}}

{{- define "uaprof.publicBaseUrl" -}}
{{- if .Values.content.publicBaseUrl -}}
{{- .Values.content.publicBaseUrl -}}
{{- else -}}
{{- printf "%s://%s-content.%s.svc:%d" (ternary "https" "http" (not (empty .Values.content.tls.existingSecret))) (include "uaprof.fullname" .) .Release.Namespace (int .Values.content.service.httpPort) -}}
{{- end -}}
{{- end -}}

{{/*
TOML rendering. Helm's toToml prints every number as a float (4096 -> 4096.0), which the
binary's integer keys refuse, so the chart prints TOML itself: integral numbers as integers
(serde reads them into float keys too), strings JSON-escaped (valid TOML basic strings),
keys sorted, null values left out (the binary's default applies).
*/}}
{{- define "uaprof.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end -}}

{{- define "uaprof.toml.scalar" -}}
{{- if kindIs "map" . -}}
{{- /* An inline table (array elements such as provisioning.tokens). */ -}}
{ {{- $t := . -}}{{- range $i, $k := keys $t | sortAlpha -}}{{ if $i }}, {{ end }}{{ include "uaprof.toml.key" $k }} = {{ include "uaprof.toml.value" (get $t $k) }}{{- end -}} }
{{- else if kindIs "string" . -}}{{ toJson . }}
{{- else if kindIs "bool" . -}}{{ . }}
{{- else if or (kindIs "float64" .) (kindIs "float32" .) -}}
{{- if eq (float64 .) (float64 (int64 .)) -}}{{ int64 . }}{{- else -}}{{ . }}{{- end -}}
{{- else if or (kindIs "int" .) (kindIs "int64" .) -}}{{ . }}
{{- else -}}{{ fail (printf "uaprof: cannot write %v (%s) to TOML" . (kindOf .)) }}
{{- end -}}
{{- end -}}

{{- define "uaprof.toml.value" -}}
{{- if kindIs "slice" . -}}
[{{ range $i, $e := . }}{{ if $i }}, {{ end }}{{ include "uaprof.toml.scalar" $e }}{{ end }}]
{{- else -}}
{{ include "uaprof.toml.scalar" . }}
{{- end -}}
{{- end -}}

{{/* One table: (dict "path" "notifier" "table" $map); the root table has path "". */}}
{{- define "uaprof.toml.table" -}}
{{- $path := .path -}}
{{- $t := .table -}}
{{- range $k := keys $t | sortAlpha -}}
{{- $v := get $t $k -}}
{{- if and (not (kindIs "invalid" $v)) (not (kindIs "map" $v)) }}
{{ include "uaprof.toml.key" $k }} = {{ include "uaprof.toml.value" $v }}
{{- end -}}
{{- end -}}
{{- range $k := keys $t | sortAlpha -}}
{{- $v := get $t $k -}}
{{- if kindIs "map" $v -}}
{{- $sub := ternary (include "uaprof.toml.key" $k) (printf "%s.%s" $path (include "uaprof.toml.key" $k)) (eq $path "") }}

[{{ $sub }}]
{{- include "uaprof.toml.table" (dict "path" $sub "table" $v) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The [redis] table both tiers share (URLs come from the environment when a password is set). */}}
{{- define "uaprof.redisTable" -}}
{{- $r := deepCopy (default (dict) .Values.redis.config) -}}
{{- $_ := set $r "cluster" .Values.redis.cluster -}}
{{- if not .Values.redis.auth.existingSecret -}}
{{- $_ := set $r "urls" .Values.redis.urls -}}
{{- end -}}
{{- toJson $r -}}
{{- end -}}

{{/* The [kafka] table without its properties, which the file prints last (see below). */}}
{{- define "uaprof.kafkaTable" -}}
{{- $k := deepCopy (default (dict) .Values.kafka.config) -}}
{{- $_ := set $k "brokers" .Values.kafka.brokers -}}
{{- toJson $k -}}
{{- end -}}

{{/* The whole configuration file of one tier: (dict "root" $ "tier" "notifier"). */}}
{{- define "uaprof.config" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $tv := get $v .tier -}}
{{- $cfg := deepCopy (default (dict) $tv.config) -}}
{{- $listen := $v.listenHost -}}
{{- $hp := ternary (printf "[%s]" $listen) $listen (contains ":" $listen) -}}
{{- $_ := set $cfg "role" .tier -}}
{{- $_ := set $cfg "data_dir" "/var/lib/uaprof" -}}
{{- $_ := set $cfg "admin_listen" (printf "%s:%d" $hp (int $tv.ports.admin)) -}}
{{- $_ := set $cfg "shutdown_grace" (printf "%ds" (int $tv.shutdownGraceSeconds)) -}}
{{- $_ := set $cfg "redis" (include "uaprof.redisTable" $root | fromJson) -}}
{{- if $v.kafka.enabled -}}
{{- $_ := set $cfg "kafka" (include "uaprof.kafkaTable" $root | fromJson) -}}
{{- end -}}
{{- $tel := default (dict) $v.telemetry -}}
{{- if $tel.otlpEndpoint -}}
{{- $svc := printf "%s-%s" (default (include "uaprof.fullname" $root) $tel.serviceName) .tier -}}
{{- $shared := dict "otlp_endpoint" $tel.otlpEndpoint "service_name" $svc -}}
{{- /* Key by key: what the tier's own config.telemetry sets wins. */}}
{{- $_ := set $cfg "telemetry" (merge (default (dict) (get $cfg "telemetry")) $shared) -}}
{{- end -}}
{{- if eq .tier "notifier" -}}
{{- $n := default (dict) (get $cfg "notifier") -}}
{{- $sip := printf "%s:%d" $hp (int $tv.ports.sip) -}}
{{- $_ := set $n "udp" $sip -}}
{{- $_ := set $n "tcp" $sip -}}
{{- if $tv.advertise -}}
{{- $_ := set $n "advertise" $tv.advertise -}}
{{- end -}}
{{- if $tv.tls.existingSecret -}}
{{- $_ := set $n "tls" (dict "listen" (printf "%s:%d" $hp (int $tv.ports.sipTls)) "cert_file" "/etc/uaprof/sip-tls/tls.crt" "key_file" "/etc/uaprof/sip-tls/tls.key") -}}
{{- end -}}
{{- with $tv.digest -}}
{{- if .existingSecret -}}
{{- if not .realm -}}
{{- fail "notifier.digest.existingSecret needs notifier.digest.realm" -}}
{{- end -}}
{{- $_ := set $n "digest" (dict "realm" .realm "credentials_file" "/etc/uaprof/sip-digest/credentials" "nonce_secret_file" "/etc/uaprof/sip-digest/nonce-secret" "nonce_lifetime" .nonceLifetime) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $cfg "notifier" $n -}}
{{- $_ := set $cfg "content_url" (include "uaprof.contentGrpcUrl" $root) -}}
{{- else -}}
{{- $c := default (dict) (get $cfg "content") -}}
{{- $_ := set $c "public_base_url" (include "uaprof.publicBaseUrl" $root) -}}
{{- $fa := dict -}}
{{- if (dig "fetchAuth" "clientCaSecret" "" $tv) -}}
{{- if not $tv.tls.existingSecret -}}
{{- fail "content.fetchAuth.clientCaSecret needs content.tls.existingSecret: client certificates come over HTTPS" -}}
{{- end -}}
{{- $_ := set $fa "client_certificates" true -}}
{{- end -}}
{{- with (dig "fetchAuth" "digest" (dict) $tv) -}}
{{- if .existingSecret -}}
{{- if not .realm -}}
{{- fail "content.fetchAuth.digest.existingSecret needs content.fetchAuth.digest.realm" -}}
{{- end -}}
{{- $_ := set $fa "digest" (dict "realm" .realm "credentials_file" "/etc/uaprof/fetch-digest/credentials" "nonce_secret_file" "/etc/uaprof/fetch-digest/nonce-secret" "nonce_lifetime" .nonceLifetime) -}}
{{- end -}}
{{- end -}}
{{- if $fa -}}
{{- $_ := set $c "fetch_auth" $fa -}}
{{- end -}}
{{- if (dig "http3" "enabled" false $tv) -}}
{{- if not $tv.tls.existingSecret -}}
{{- fail "content.http3.enabled needs content.tls.existingSecret: HTTP/3 is always encrypted" -}}
{{- end -}}
{{- $_ := set $cfg "http3_listen" (printf "%s:%d" $hp (int $tv.ports.http)) -}}
{{- $_ := set $cfg "http3_alt_svc_port" (int $tv.service.httpPort) -}}
{{- end -}}
{{- if $tv.tls.existingSecret -}}
{{- $files := dict "cert_file" "/etc/uaprof/tls/tls.crt" "key_file" "/etc/uaprof/tls/tls.key" -}}
{{- $phones := deepCopy $files -}}
{{- if (dig "fetchAuth" "clientCaSecret" "" $tv) -}}
{{- $_ := set $phones "client_ca_file" "/etc/uaprof/phone-ca/ca.crt" -}}
{{- end -}}
{{- $_ := set $cfg "http_tls" $phones -}}
{{- $prov := deepCopy $files -}}
{{- if $tv.tls.clientCaSecret -}}
{{- $_ := set $prov "client_ca_file" "/etc/uaprof/client-ca/ca.crt" -}}
{{- end -}}
{{- $_ := set $cfg "provision_tls" $prov -}}
{{- end -}}
{{- with $tv.urlSigning -}}
{{- if and .existingSecret (not .keys) -}}
{{- fail "content.urlSigning.existingSecret needs content.urlSigning.keys: the Secret's keys that hold the signing secrets" -}}
{{- end -}}
{{- if .existingSecret -}}
{{- $files := list -}}
{{- range .keys -}}{{- $files = append $files (printf "/etc/uaprof/url-signing/%s" .) -}}{{- end -}}
{{- $_ := set $c "url_signing_key_files" $files -}}
{{- end -}}
{{- end -}}
{{- $_ := set $cfg "content" $c -}}
{{- $_ := set $cfg "http_listen" (printf "%s:%d" $hp (int $tv.ports.http)) -}}
{{- $p := $v.provisioning -}}
{{- $_ := set $cfg "provisioning" (dict "tokens" (default (list) $p.tokens) "allow_open" $p.allowOpen) -}}
{{- $provHost := ternary $hp "127.0.0.1" (include "uaprof.provisionReachable" $root | eq "true") -}}
{{- $_ := set $cfg "provision_listen" (printf "%s:%d" $provHost (int $tv.ports.provision)) -}}
{{- $_ := set $cfg "grpc_listen" (printf "%s:%d" $hp (int $tv.ports.grpc)) -}}
{{- end -}}
# uaprof {{ .tier }} tier, rendered by the {{ $root.Chart.Name }} chart from its values.
{{- include "uaprof.toml.table" (dict "path" "" "table" $cfg) }}
{{- if $v.kafka.enabled }}

# Last, so that the init container can append secret properties (sasl.password) to it.
[kafka.properties]
{{- include "uaprof.toml.table" (dict "path" "kafka.properties" "table" (default (dict) $v.kafka.properties)) }}
{{- end }}
{{ end -}}

{{/* Whether the provisioning API listens beyond the pod's loopback: "true" or "false". */}}
{{- define "uaprof.provisionReachable" -}}
{{- if or .Values.provisioning.tokens .Values.provisioning.allowOpen -}}true{{- else -}}false{{- end -}}
{{- end -}}
