{{/*
Names, labels, the image, the container's arguments, and the one list of RBAC rules every
Role and ClusterRole of the chart is cut from.

Every template of this chart ends in .tpl, not .yaml: deploy/ is also read as a directory of
manifests, subdirectories included (vestibule_testkit::rbac::read_documents), and a template
is not YAML until Helm renders it. Helm renders every file here whose name does not start
with "_", whatever its extension.
*/}}

{{- define "vestibule.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vestibule.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "vestibule.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* What the Deployment, Services and budget select pods by: fixed for a release's life. */}}
{{- define "vestibule.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vestibule.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "vestibule.labels" -}}
{{ include "vestibule.selectorLabels" . }}
{{- if .Values.helmLabels }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "vestibule.chart" . }}
{{- end }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "vestibule.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vestibule.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "vestibule.image" -}}
{{- $image := .Values.controller.image }}
{{- $repository := $image.repository | default (printf "%s/%s" $image.registry $image.image) }}
{{- $reference := printf "%s:%s" $repository ($image.tag | default .Chart.AppVersion) }}
{{- if $image.digest }}
{{- $reference = printf "%s@%s" $reference $image.digest }}
{{- end }}
{{- $reference }}
{{- end }}

{{/* `["a", "b"]`: the flow style the rules are written in, easier to read than a block. */}}
{{- define "vestibule.flowList" -}}
[{{ range $i, $item := . }}{{ if $i }}, {{ end }}{{ $item | quote }}{{ end }}]
{{- end }}

{{/*
Every permission the controller has. Each rule says where it is needed:
  cluster   cluster-scoped objects: always a ClusterRole;
  watched   the namespaces Vestibule watches (all of them without controller.scope);
  own       the release namespace only (the leader-election Lease);
and, in `also`, the namespaces of the objects flags name, which are read even when their
namespace is not watched: publish (--publish-service), backend (--default-backend-service),
certificate (--default-ssl-certificate).
*/}}
{{- define "vestibule.rbacRules" -}}
- why: Which IngressClasses name Vestibule's controller (cluster-scoped objects).
  where: cluster
  apiGroups: ["networking.k8s.io"]
  resources: ["ingressclasses"]
  verbs: ["get", "list", "watch"]
- why: The routing rules themselves.
  where: watched
  apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["get", "list", "watch"]
- why: Writing status.loadBalancer of the Ingresses Vestibule serves (elected leader only).
  where: watched
  apiGroups: ["networking.k8s.io"]
  resources: ["ingresses/status"]
  verbs: ["update", "patch"]
- why: Service ports and types, and the --publish-service Service's address.
  where: watched
  also: [publish, backend]
  apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch"]
- why: The ready pod addresses behind each Service.
  where: watched
  also: [backend]
  apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["get", "list", "watch"]
- why: |-
    Certificates and upstream CAs. Vestibule only asks for Secrets of type kubernetes.io/tls
    and Opaque (field selectors), but RBAC cannot express that: this rule lets it read every
    Secret.
  where: watched
  also: [certificate]
  apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
- why: Header values for the external authentication request (auth-proxy-set-headers).
  where: watched
  apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch"]
- why: Problems found in an Ingress, reported as Events on it (elected leader only).
  where: watched
  apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- why: The leader-election Lease.
  where: own
  apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
{{- end }}

{{/* `rules:` of a Role or ClusterRole, from a list of rules of vestibule.rbacRules. */}}
{{- define "vestibule.renderRules" -}}
rules:
{{- range . }}
{{- range splitList "\n" (trim .why) }}
  # {{ . }}
{{- end }}
  - apiGroups: {{ include "vestibule.flowList" .apiGroups }}
    resources: {{ include "vestibule.flowList" .resources }}
    verbs: {{ include "vestibule.flowList" .verbs }}
{{- end }}
{{- end }}

{{/* The namespaces to watch with controller.scope, as a list. */}}
{{- define "vestibule.watchedNamespaces" -}}
{{- $namespaces := list }}
{{- range splitList "," (.Values.controller.scope.namespace | default .Release.Namespace) }}
{{- if trim . }}
{{- $namespaces = append $namespaces (trim .) }}
{{- end }}
{{- end }}
{{- toJson $namespaces }}
{{- end }}

{{/* The namespace of an NS/NAME reference, the release's when it has none. */}}
{{- define "vestibule.refNamespace" -}}
{{- $parts := splitList "/" .ref }}
{{- if eq (len $parts) 2 }}{{ index $parts 0 }}{{ else }}{{ .root.Release.Namespace }}{{ end }}
{{- end }}

{{- define "vestibule.publishService" -}}
{{- $publish := .Values.controller.publishService }}
{{- if and $publish.enabled (or .Values.controller.service.enabled $publish.pathOverride) }}
{{- $publish.pathOverride | default (printf "%s/%s" .Release.Namespace (include "vestibule.fullname" .)) }}
{{- end }}
{{- end }}

{{- define "vestibule.defaultBackendService" -}}
{{- if .Values.defaultBackend.enabled }}
{{- $service := required "defaultBackend.enabled needs defaultBackend.service: NAME of a Service in the release namespace, or NS/NAME (the chart runs no default backend of its own)" .Values.defaultBackend.service }}
{{- if contains "/" $service }}{{ $service }}{{ else }}{{ printf "%s/%s" .Release.Namespace $service }}{{ end }}
{{- end }}
{{- end }}

{{/*
Namespaces outside the watched ones that hold an object a flag names, each with the `also`
purposes that bring it in: {"ns": ["publish", ...]}.
*/}}
{{- define "vestibule.namedObjectNamespaces" -}}
{{- $root := . }}
{{- $out := dict }}
{{- $watched := include "vestibule.watchedNamespaces" . | fromJsonArray }}
{{- $refs := list }}
{{- with include "vestibule.publishService" . }}
{{- $refs = append $refs (list "publish" .) }}
{{- end }}
{{- with include "vestibule.defaultBackendService" . }}
{{- $refs = append $refs (list "backend" .) }}
{{- end }}
{{- with index .Values.controller.extraArgs "default-backend-service" }}
{{- $refs = append $refs (list "backend" (toString .)) }}
{{- end }}
{{- with index .Values.controller.extraArgs "default-ssl-certificate" }}
{{- $refs = append $refs (list "certificate" (toString .)) }}
{{- end }}
{{- range $refs }}
{{- $namespace := include "vestibule.refNamespace" (dict "ref" (index . 1) "root" $root) }}
{{- if not (has $namespace $watched) }}
{{- $_ := set $out $namespace (append (get $out $namespace | default list) (index . 0) | uniq) }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/* A value of controller.config or extraArgs as text: YAML numbers arrive as floats. */}}
{{- define "vestibule.text" -}}
{{- if and (kindIs "float64" .) (eq . (float64 (int64 .))) }}{{ int64 . }}{{ else }}{{ toString . }}{{ end }}
{{- end }}

{{/* nginx's sizes (8k, 1m) in bytes. */}}
{{- define "vestibule.bytes" -}}
{{- $size := lower (trim .) }}
{{- if regexMatch "^[0-9]+$" $size }}{{ $size }}
{{- else if regexMatch "^[0-9]+k$" $size }}{{ mul (trimSuffix "k" $size | atoi) 1024 }}
{{- else if regexMatch "^[0-9]+m$" $size }}{{ mul (trimSuffix "m" $size | atoi) 1048576 }}
{{- else }}{{ fail (printf "controller.config: size %q is not a number of bytes, k or m" .) }}
{{- end }}
{{- end }}

{{/*
controller.config: ingress-nginx ConfigMap keys to Vestibule flags, as `vestibule check
--nginx-configmap` maps them. Returns a JSON list of `--flag=value` arguments.
*/}}
{{- define "vestibule.configArgs" -}}
{{- $config := .Values.controller.config }}
{{- /* Keys whose value Vestibule's flag takes as it is. */}}
{{- $same := dict
  "add-headers" "add-headers"
  "allow-cross-namespace-resources" "allow-cross-namespace-resources"
  "block-cidrs" "block-cidrs"
  "block-user-agents" "block-user-agents"
  "client-header-timeout" "client-header-timeout"
  "custom-http-errors" "custom-http-errors"
  "denylist-source-range" "denylist-source-range"
  "force-ssl-redirect" "force-ssl-redirect"
  "global-allowed-response-headers" "global-allowed-response-headers"
  "global-auth-always-set-cookie" "global-auth-always-set-cookie"
  "global-auth-cache-duration" "global-auth-cache-duration"
  "global-auth-cache-key" "global-auth-cache-key"
  "global-auth-method" "global-auth-method"
  "global-auth-request-redirect" "global-auth-request-redirect"
  "global-auth-response-headers" "global-auth-response-headers"
  "global-auth-signin" "global-auth-signin"
  "global-auth-signin-redirect-param" "global-auth-signin-redirect-param"
  "global-auth-url" "global-auth-url"
  "hide-headers" "hide-headers"
  "hsts" "hsts"
  "hsts-include-subdomains" "hsts-include-subdomains"
  "hsts-max-age" "hsts-max-age"
  "hsts-preload" "hsts-preload"
  "http-redirect-code" "http-redirect-code"
  "http2-max-concurrent-streams" "http2-max-concurrent-streams"
  "keep-alive" "client-keepalive-timeout"
  "limit-conn-status-code" "limit-conn-status-code"
  "limit-req-status-code" "limit-req-status-code"
  "no-auth-locations" "no-auth-locations"
  "proxy-body-size" "proxy-body-size"
  "proxy-connect-timeout" "proxy-connect-timeout"
  "proxy-next-upstream-timeout" "proxy-next-upstream-timeout"
  "proxy-next-upstream-tries" "proxy-next-upstream-tries"
  "proxy-read-timeout" "proxy-read-timeout"
  "proxy-send-timeout" "proxy-send-timeout"
  "proxy-set-headers" "proxy-set-headers"
  "ssl-redirect" "ssl-redirect"
  "upstream-keepalive-connections" "upstream-keepalive-connections"
  "upstream-keepalive-timeout" "upstream-keepalive-timeout"
  "whitelist-source-range" "allowlist-source-range"
  "worker-shutdown-timeout" "shutdown-grace-period"
}}
{{- /* Keys read below, together or with a conversion. */}}
{{- $converted := list
  "disable-access-log" "enable-real-ip" "error-log-level" "large-client-header-buffers"
  "load-balance" "proxy-next-upstream" "proxy-real-ip-cidr" "retry-non-idempotent"
  "use-forwarded-headers" "use-proxy-protocol" "worker-processes"
}}
{{- $args := list }}
{{- range $key := keys $config | sortAlpha }}
{{- $value := include "vestibule.text" (index $config $key) }}
{{- if hasKey $same $key }}
{{- $args = append $args (printf "--%s=%s" (get $same $key) $value) }}
{{- else if not (has $key $converted) }}
{{- fail (printf "controller.config: %q is not an ingress-nginx ConfigMap key this chart carries over to a Vestibule flag (docs/helm.md lists those that are; `vestibule check --nginx-configmap` says what each other key did and why Vestibule needs nothing or has no equivalent; Vestibule's own flags go in controller.extraArgs)" $key) }}
{{- end }}
{{- end }}
{{- $on := dict }}
{{- range $key := list "disable-access-log" "enable-real-ip" "retry-non-idempotent" "use-forwarded-headers" "use-proxy-protocol" }}
{{- $_ := set $on $key (eq (include "vestibule.text" (index $config $key | default "false")) "true") }}
{{- end }}
{{- if (get $on "disable-access-log") }}
{{- $args = append $args "--access-log=off" }}
{{- end }}
{{- if or (get $on "enable-real-ip") (get $on "use-forwarded-headers") }}
{{- $cidrs := required "controller.config: use-forwarded-headers and enable-real-ip need proxy-real-ip-cidr, the addresses of your load balancer (ingress-nginx's default, 0.0.0.0/0, believes every client's X-Forwarded-For)" (index $config "proxy-real-ip-cidr") }}
{{- $args = append $args (printf "--trusted-proxies=%s" (include "vestibule.text" $cidrs | replace " " "")) }}
{{- end }}
{{- with index $config "error-log-level" }}
{{- $levels := dict "debug" "debug" "info" "info" "notice" "info" "warn" "warn" "error" "error" "crit" "error" "alert" "error" "emerg" "error" }}
{{- if not (hasKey $levels (toString .)) }}
{{- fail (printf "controller.config: error-log-level %q is not an nginx log level" .) }}
{{- end }}
{{- $args = append $args (printf "--log-level=%s" (get $levels (toString .))) }}
{{- end }}
{{- with index $config "large-client-header-buffers" }}
{{- $parts := splitList " " (toString . | trim | regexReplaceAll "\\s+" " ") }}
{{- if ne (len $parts) 2 }}{{ fail (printf "controller.config: large-client-header-buffers %q is not \"COUNT SIZE\"" .) }}{{ end }}
{{- $size := include "vestibule.bytes" (index $parts 1) | atoi }}
{{- $args = append $args (printf "--max-request-header-bytes=%d" (mul (index $parts 0 | atoi) $size)) }}
{{- $args = append $args (printf "--max-uri-bytes=%d" $size) }}
{{- end }}
{{- with index $config "load-balance" }}
{{- $balances := dict "round_robin" "round-robin" "ewma" "ewma" }}
{{- if not (hasKey $balances (toString .)) }}
{{- fail (printf "controller.config: load-balance %q has no equivalent: Vestibule balances by round_robin or ewma" .) }}
{{- end }}
{{- $args = append $args (printf "--load-balance=%s" (get $balances (toString .))) }}
{{- end }}
{{- if or (hasKey $config "proxy-next-upstream") (get $on "retry-non-idempotent") }}
{{- $conditions := include "vestibule.text" (index $config "proxy-next-upstream" | default "error timeout") }}
{{- if (get $on "retry-non-idempotent") }}
{{- $conditions = printf "%s non_idempotent" $conditions }}
{{- end }}
{{- $args = append $args (printf "--proxy-next-upstream=%s" $conditions) }}
{{- end }}
{{- if (get $on "use-proxy-protocol") }}
{{- $args = append $args "--proxy-protocol" }}
{{- end }}
{{- with index $config "worker-processes" }}
{{- if ne (toString .) "auto" }}
{{- $args = append $args (printf "--worker-threads=%s" (include "vestibule.text" .)) }}
{{- end }}
{{- end }}
{{- toJson $args }}
{{- end }}

{{/* Flags of `vestibule run` that take no value. */}}
{{- define "vestibule.switches" -}}
["dashboard", "enable-ssl-passthrough", "proxy-protocol", "watch-ingress-without-class"]
{{- end }}

{{/* The container's arguments: the subcommand, then each flag once. */}}
{{- define "vestibule.args" -}}
{{- $c := .Values.controller }}
{{- $args := list "run" }}
{{- with include "vestibule.publishService" . }}
{{- $args = append $args (printf "--publish-service=%s" .) }}
{{- end }}
{{- /* Flags at Vestibule's defaults are left out, so the plain manifests stay short. */}}
{{- if ne $c.ingressClassResource.controllerValue "vestibule.dev/ingress-controller" }}
{{- $args = append $args (printf "--controller-class=%s" $c.ingressClassResource.controllerValue) }}
{{- end }}
{{- if ne $c.ingressClass "vestibule" }}
{{- $args = append $args (printf "--ingress-class=%s" $c.ingressClass) }}
{{- end }}
{{- if $c.watchIngressWithoutClass }}
{{- $args = append $args "--watch-ingress-without-class" }}
{{- end }}
{{- if $c.scope.enabled }}
{{- $args = append $args (printf "--watch-namespace=%s" (include "vestibule.watchedNamespaces" . | fromJsonArray | join ",")) }}
{{- end }}
{{- if $c.electionID }}
{{- $args = append $args (printf "--election-id=%s" $c.electionID) }}
{{- end }}
{{- with include "vestibule.defaultBackendService" . }}
{{- $args = append $args (printf "--default-backend-service=%s" .) }}
{{- end }}
{{- if ne (int $c.containerPort.http) 8080 }}
{{- $args = append $args (printf "--http-addr=0.0.0.0:%d" (int $c.containerPort.http)) }}
{{- end }}
{{- if ne (int $c.containerPort.https) 8443 }}
{{- $args = append $args (printf "--https-addr=0.0.0.0:%d" (int $c.containerPort.https)) }}
{{- end }}
{{- if ne (int $c.metrics.port) 10254 }}
{{- $args = append $args (printf "--admin-addr=0.0.0.0:%d" (int $c.metrics.port)) }}
{{- end }}
{{- $args = concat $args (include "vestibule.configArgs" . | fromJsonArray) }}
{{- $switches := include "vestibule.switches" . | fromJsonArray }}
{{- range $key := keys $c.extraArgs | sortAlpha }}
{{- $value := index $c.extraArgs $key }}
{{- $values := ternary $value (list $value) (kindIs "slice" $value) }}
{{- range $values }}
{{- $text := include "vestibule.text" . }}
{{- if has $key $switches }}
{{- if or (eq $text "") (eq $text "true") }}
{{- $args = append $args (printf "--%s" $key) }}
{{- else if ne $text "false" }}
{{- fail (printf "controller.extraArgs: %s takes no value: true to set it, false to leave it out" $key) }}
{{- end }}
{{- else if eq $text "" }}
{{- $args = append $args (printf "--%s" $key) }}
{{- else }}
{{- $args = append $args (printf "--%s=%s" $key $text) }}
{{- end }}
{{- end }}
{{- end }}
{{- /* vestibule run refuses a flag given twice, and a pod that never starts is worse than a
       chart that does not render. */}}
{{- $seen := dict }}
{{- range $args }}
{{- if hasPrefix "--" . }}
{{- $name := regexReplaceAll "=.*" (trimPrefix "--" .) "" }}
{{- if and (hasKey $seen $name) (ne $name "watch-namespace") }}
{{- fail (printf "--%s is set twice (by controller.config, controller.extraArgs or another value of the chart); set it in one place" $name) }}
{{- end }}
{{- $_ := set $seen $name true }}
{{- end }}
{{- end }}
{{- toJson $args }}
{{- end }}
