{{/*
The chart name, truncated to 63 characters (the DNS-1123 label limit).
*/}}
{{- define "payment-service.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: <release>-<chart>, or the release name alone when it already holds the chart name.
*/}}
{{- define "payment-service.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "payment-service.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels shared by every resource (no component: each resource adds its own).
*/}}
{{- define "payment-service.baseLabels" -}}
helm.sh/chart: {{ include "payment-service.chart" . }}
app.kubernetes.io/name: {{ include "payment-service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ include "payment-service.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: payment-service
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels of the server's resources.
*/}}
{{- define "payment-service.labels" -}}
{{ include "payment-service.baseLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{/*
Selector labels of the server's pods. The component keeps the migration Job's pod out of the
Service and the PodDisruptionBudget.
*/}}
{{- define "payment-service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "payment-service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{/*
Labels of the migration hook's resources.
*/}}
{{- define "payment-service.migrationLabels" -}}
{{ include "payment-service.baseLabels" . }}
app.kubernetes.io/component: migration
{{- end }}

{{/*
Labels of the relay's resources.
*/}}
{{- define "payment-service.relayLabels" -}}
{{ include "payment-service.baseLabels" . }}
app.kubernetes.io/component: relay
{{- end }}

{{/*
Selector labels of the relay's pods.
*/}}
{{- define "payment-service.relaySelectorLabels" -}}
app.kubernetes.io/name: {{ include "payment-service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: relay
{{- end }}

{{/*
The relay's full name.
*/}}
{{- define "payment-service.relayName" -}}
{{- printf "%s-relay" (include "payment-service.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Whether the relay is rendered: "true" when relay.enabled and it has somewhere to deliver
(webhook URLs, or a RabbitMQ URL inline or in an existing Secret), else "". Enabled without a
destination is refused by payment-service.validate.
*/}}
{{- define "payment-service.relayEnabled" -}}
{{- $r := .Values.relay }}
{{- if and $r.enabled (or $r.webhook.urls $r.rabbitmq.url $r.rabbitmq.existingSecret) }}true{{- end }}
{{- end }}

{{/*
Labels of the idempotency key purge's resources.
*/}}
{{- define "payment-service.purgeLabels" -}}
{{ include "payment-service.baseLabels" . }}
app.kubernetes.io/component: purge-idempotency-keys
{{- end }}

{{/*
The ServiceAccount of the server's pods.
*/}}
{{- define "payment-service.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "payment-service.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The ServiceAccount of the migration hook's pod: it must exist before the release's resources
do, so a ServiceAccount this chart creates cannot be used (see migrations.serviceAccountName).
*/}}
{{- define "payment-service.migrationServiceAccountName" -}}
{{- if .Values.migrations.serviceAccountName }}
{{- .Values.migrations.serviceAccountName }}
{{- else if .Values.serviceAccount.create }}
{{- "default" }}
{{- else }}
{{- include "payment-service.serviceAccountName" . }}
{{- end }}
{{- end }}

{{/*
The image tag: image.tag, else the chart's appVersion.
*/}}
{{- define "payment-service.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion | toString }}
{{- end }}

{{/*
The image reference: repository@digest when a digest is set, else repository:tag.
*/}}
{{- define "payment-service.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "payment-service.imageTag" .) }}
{{- end }}
{{- end }}

{{/*
Name of the Secret the chart creates for the server (password, URL, API keys).
*/}}
{{- define "payment-service.secretName" -}}
{{- printf "%s-secret" (include "payment-service.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of the hook Secret the migration Job reads its database password from on a first install,
when the chart's own Secret does not exist yet.
*/}}
{{- define "payment-service.migrationSecretName" -}}
{{- printf "%s-migrate-db" (include "payment-service.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The database part of a Secret the chart creates: the password, or the URL when database.url is
set; nothing when database.existingSecret is set. Keys: db-password, database-url.
*/}}
{{- define "payment-service.databaseSecretData" -}}
{{- $db := .Values.database }}
{{- if not $db.existingSecret }}
{{- if $db.url }}
database-url: {{ $db.url | b64enc | quote }}
{{- else }}
db-password: {{ $db.password | toString | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Everything the chart's own Secret holds: the database part, the API keys, and the relay's
signing secret and RabbitMQ URL when given inline (development) rather than in existing Secrets.
Empty when every secret lives in an existing Secret (the chart then creates none).
*/}}
{{- define "payment-service.secretData" -}}
{{- include "payment-service.databaseSecretData" . }}
{{- if and .Values.apiKeys.keys (not .Values.apiKeys.existingSecret) }}
api-keys: {{ join "," .Values.apiKeys.keys | b64enc | quote }}
{{- end }}
{{- if include "payment-service.relayEnabled" . }}
{{- $r := .Values.relay }}
{{- if and $r.webhook.urls $r.webhook.secret (not $r.webhook.existingSecret) }}
webhook-secret: {{ $r.webhook.secret | b64enc | quote }}
{{- end }}
{{- if and $r.rabbitmq.url (not $r.rabbitmq.existingSecret) }}
rabbitmq-url: {{ $r.rabbitmq.url | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Whether the chart creates a Secret (it has anything to hold): "true" or "".
*/}}
{{- define "payment-service.createSecret" -}}
{{- if include "payment-service.secretData" . | trim }}true{{- end }}
{{- end }}

{{/*
The non-secret settings, as a map of environment variables to string values. The ConfigMap
holds them for the server, and the migration Job gets the same ones inline (it runs before the
ConfigMap exists on a first install). ORDER_DB_* are left out when a DATABASE_URL replaces them.
*/}}
{{- define "payment-service.settings" -}}
{{- $db := .Values.database }}
{{- $c := .Values.config }}
{{- /* The URL in use: the existing Secret's when one is named (database.url is then ignored). */}}
{{- $url := ternary $db.secretKeys.url $db.url (not (empty $db.existingSecret)) }}
{{- if not $url }}
ORDER_DB_HOST: {{ $db.host | quote }}
ORDER_DB_PORT: {{ $db.port | int | quote }}
ORDER_DB_NAME: {{ $db.name | quote }}
ORDER_DB_USER: {{ $db.user | quote }}
{{- end }}
PAYMENT_HOST: {{ $c.host | quote }}
PAYMENT_PORT: {{ .Values.containerPort | int | quote }}
PAYMENT_WORKERS: {{ $c.workers | int | quote }}
PAYMENT_LOG_LEVEL: {{ $c.logLevel | quote }}
PAYMENT_LOG_FORMAT: {{ $c.logFormat | quote }}
PAYMENT_DB_POOL_SIZE: {{ $c.dbPoolSize | int | quote }}
PAYMENT_DB_POOL_TIMEOUT_SECONDS: {{ $c.dbPoolTimeoutSeconds | toString | quote }}
PAYMENT_DB_CONNECT_TIMEOUT_SECONDS: {{ $c.dbConnectTimeoutSeconds | int | quote }}
PAYMENT_DB_STATEMENT_TIMEOUT_MS: {{ $c.dbStatementTimeoutMs | int | quote }}
PAYMENT_DB_LOCK_TIMEOUT_MS: {{ $c.dbLockTimeoutMs | int | quote }}
PAYMENT_DB_TRANSACTION_POOLING: {{ $c.dbTransactionPooling | toString | quote }}
PAYMENT_SHUTDOWN_TIMEOUT_SECONDS: {{ $c.shutdownTimeoutSeconds | int | quote }}
PAYMENT_IDEMPOTENCY_RETENTION_HOURS: {{ $c.idempotencyRetentionHours | int | quote }}
PAYMENT_REQUEST_DEADLINE_MS: {{ $c.requestDeadlineMs | int | quote }}
PAYMENT_READY_TIMEOUT_MS: {{ $c.readyTimeoutMs | int | quote }}
PAYMENT_MAX_REQUESTS_IN_FLIGHT: {{ $c.maxRequestsInFlight | int | quote }}
PAYMENT_MAX_CONNECTIONS: {{ $c.maxConnections | int | quote }}
PAYMENT_MAX_HEADER_BYTES: {{ $c.maxHeaderBytes | int | quote }}
PAYMENT_HEADER_TIMEOUT_SECONDS: {{ $c.headerTimeoutSeconds | toString | quote }}
PAYMENT_BODY_TIMEOUT_SECONDS: {{ $c.bodyTimeoutSeconds | toString | quote }}
PAYMENT_IDLE_TIMEOUT_SECONDS: {{ $c.idleTimeoutSeconds | toString | quote }}
PAYMENT_EVENT_SOURCE: {{ $c.eventSource | quote }}
{{- end }}

{{/*
The relay's own settings, in a ConfigMap of their own: only the relay reads them, and the
server must not see webhook URLs without their signing secret.
*/}}
{{- define "payment-service.relaySettings" -}}
{{- $r := .Values.relay }}
{{- with $r.webhook.urls }}
PAYMENT_WEBHOOK_URLS: {{ join "," . | quote }}
{{- end }}
PAYMENT_WEBHOOK_TIMEOUT_SECONDS: {{ $r.webhook.timeoutSeconds | toString | quote }}
PAYMENT_RABBITMQ_EXCHANGE: {{ $r.rabbitmq.exchange | quote }}
PAYMENT_RELAY_BATCH_SIZE: {{ $r.batchSize | int | quote }}
PAYMENT_RELAY_POLL_INTERVAL_MS: {{ $r.pollIntervalMs | int | quote }}
PAYMENT_RELAY_LEASE_SECONDS: {{ $r.leaseSeconds | int | quote }}
PAYMENT_RELAY_MAX_ATTEMPTS: {{ $r.maxAttempts | int | quote }}
PAYMENT_RELAY_BACKOFF_BASE_MS: {{ $r.backoffBaseMs | int | quote }}
PAYMENT_RELAY_BACKOFF_MAX_SECONDS: {{ $r.backoffMaxSeconds | int | quote }}
PAYMENT_OUTBOX_RETENTION_HOURS: {{ $r.outboxRetentionHours | int | quote }}
PAYMENT_RELAY_PORT: {{ $r.port | int | quote }}
{{- end }}

{{/*
The relay's secret variables: PAYMENT_WEBHOOK_SECRET when there are webhook URLs, and
PAYMENT_RABBITMQ_URL when RabbitMQ is on; each from its existing Secret, else the chart's.
*/}}
{{- define "payment-service.relaySecretEnv" -}}
{{- $r := .Values.relay }}
{{- if $r.webhook.urls }}
- name: PAYMENT_WEBHOOK_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $r.webhook.existingSecret | default (include "payment-service.secretName" .) }}
      key: {{ ternary $r.webhook.existingSecretKey "webhook-secret" (not (empty $r.webhook.existingSecret)) }}
{{- end }}
{{- if or $r.rabbitmq.url $r.rabbitmq.existingSecret }}
- name: PAYMENT_RABBITMQ_URL
  valueFrom:
    secretKeyRef:
      name: {{ $r.rabbitmq.existingSecret | default (include "payment-service.secretName" .) }}
      key: {{ ternary $r.rabbitmq.existingSecretKey "rabbitmq-url" (not (empty $r.rabbitmq.existingSecret)) }}
{{- end }}
{{- end }}

{{/*
The relay's destination ports, for its NetworkPolicy when relay.networkPolicy.egress is empty:
each webhook URL's port (80 for http, 443 for https, unless the URL names one) and
rabbitmq.port when RabbitMQ is on. A list of unique numbers, as YAML.
*/}}
{{- define "payment-service.relayDestinationPorts" -}}
{{- $r := .Values.relay }}
{{- $ports := list }}
{{- range $r.webhook.urls }}
{{- $url := urlParse . }}
{{- $explicit := regexFind ":[0-9]+$" $url.host | trimPrefix ":" }}
{{- $ports = append $ports (int (default (ternary "443" "80" (eq $url.scheme "https")) $explicit)) }}
{{- end }}
{{- if or $r.rabbitmq.url $r.rabbitmq.existingSecret }}
{{- $ports = append $ports (int $r.rabbitmq.port) }}
{{- end }}
{{- toYaml (uniq $ports) }}
{{- end }}

{{/*
The database's secret environment variable, one of:
  DATABASE_URL      from database.existingSecret[secretKeys.url], or the chart's database-url;
  ORDER_DB_PASSWORD from database.existingSecret[secretKeys.password], or the chart's db-password.
Takes a dict: "root" (the top context) and "secretName" (the chart-made Secret to read when no
existingSecret is set: the server's, or the migration hook's).
*/}}
{{- define "payment-service.databaseSecretEnv" -}}
{{- $db := .root.Values.database }}
{{- if $db.existingSecret }}
{{- if $db.secretKeys.url }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $db.existingSecret }}
      key: {{ $db.secretKeys.url }}
{{- else }}
- name: ORDER_DB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $db.existingSecret }}
      key: {{ $db.secretKeys.password }}
{{- end }}
{{- else if $db.url }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: database-url
{{- else }}
- name: ORDER_DB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: db-password
{{- end }}
{{- end }}

{{/*
PAYMENT_API_KEYS, from apiKeys.existingSecret or the chart's Secret; nothing when no keys are set
(authentication off: an empty variable would stop the service).
*/}}
{{- define "payment-service.apiKeysEnv" -}}
{{- if .Values.apiKeys.existingSecret }}
- name: PAYMENT_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.apiKeys.existingSecret }}
      key: {{ .Values.apiKeys.existingSecretKey }}
{{- else if .Values.apiKeys.keys }}
- name: PAYMENT_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "payment-service.secretName" . }}
      key: api-keys
{{- end }}
{{- end }}

{{/*
Pod spec fields shared by the server and the migration Job.
*/}}
{{- define "payment-service.podCommon" -}}
automountServiceAccountToken: {{ .Values.automountServiceAccountToken }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The /tmp emptyDir volume (the root file system is read-only).
*/}}
{{- define "payment-service.tmpVolume" -}}
- name: tmp
  emptyDir:
    {{- with .Values.tmpVolume.medium }}
    medium: {{ . }}
    {{- end }}
    sizeLimit: {{ .Values.tmpVolume.sizeLimit }}
{{- end }}

{{/*
The service's containers' extra variables (extraEnv), as list items; empty when none.
*/}}
{{- define "payment-service.extraEnv" -}}
{{- with .Values.extraEnv }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/*
envFrom of a container that reads the chart's ConfigMap(s): those named in "configMaps", then
extraEnvFrom. Takes a dict: "root" and "configMaps" (a list of names).
*/}}
{{- define "payment-service.envFrom" -}}
{{- range .configMaps }}
- configMapRef:
    name: {{ . }}
{{- end }}
{{- with .root.Values.extraEnvFrom }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Volume mounts of the service's containers: /tmp, then extraVolumeMounts.
*/}}
{{- define "payment-service.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Volumes of the chart's pods: the /tmp emptyDir, then extraVolumes.
*/}}
{{- define "payment-service.volumes" -}}
{{ include "payment-service.tmpVolume" . }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Containers given in values (sidecars, initContainers), each without a securityContext given the
chart's. Takes a dict: "root" and "containers".
*/}}
{{- define "payment-service.extraContainers" -}}
{{- $containers := list }}
{{- range .containers }}
{{- $container := deepCopy . }}
{{- if not (hasKey $container "securityContext") }}
{{- $_ := set $container "securityContext" $.root.Values.securityContext }}
{{- end }}
{{- $containers = append $containers $container }}
{{- end }}
{{- toYaml $containers }}
{{- end }}

{{/*
Affinity and topology spread of a Deployment's pods; a constraint without labelSelector gets
the pods' own selector labels. Takes a dict: "root" and "selector" (the labels, as YAML).
*/}}
{{- define "payment-service.placement" -}}
{{- with .root.Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.topologySpreadConstraints }}
{{- $constraints := list }}
{{- range . }}
{{- $constraint := deepCopy . }}
{{- if not $constraint.labelSelector }}
{{- $_ := set $constraint "labelSelector" (dict "matchLabels" ($.selector | fromYaml)) }}
{{- end }}
{{- $constraints = append $constraints $constraint }}
{{- end }}
topologySpreadConstraints:
  {{- toYaml $constraints | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Checks of values that the schema cannot express; rendering fails with a message naming them.
*/}}
{{- define "payment-service.validate" -}}
{{- $grace := int .Values.terminationGracePeriodSeconds }}
{{- $preStop := int .Values.lifecycle.preStopSleepSeconds }}
{{- $shutdown := int .Values.config.shutdownTimeoutSeconds }}
{{- if le $grace (add $preStop $shutdown) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed lifecycle.preStopSleepSeconds (%d) + config.shutdownTimeoutSeconds (%d) = %d, or Kubernetes kills requests in flight" $grace $preStop $shutdown (add $preStop $shutdown)) }}
{{- end }}
{{- $pdb := .Values.podDisruptionBudget }}
{{- if and $pdb.enabled (ne (toString $pdb.minAvailable) "") (ne (toString $pdb.maxUnavailable) "") }}
{{- fail "podDisruptionBudget: set only one of minAvailable and maxUnavailable (clear the other with \"\")" }}
{{- end }}
{{- if and $pdb.enabled (eq (toString $pdb.minAvailable) "") (eq (toString $pdb.maxUnavailable) "") }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not (or .Values.autoscaling.targetCPUUtilizationPercentage .Values.autoscaling.targetMemoryUtilizationPercentage)) }}
{{- fail "autoscaling: set targetCPUUtilizationPercentage and/or targetMemoryUtilizationPercentage" }}
{{- end }}
{{- if and .Values.networkPolicy.enabled (not .Values.networkPolicy.ingress.fromSameNamespace) (not .Values.networkPolicy.ingress.from) }}
{{- fail "networkPolicy.ingress: nothing could reach the service; set fromSameNamespace or list sources in from" }}
{{- end }}
{{- $r := .Values.relay }}
{{- if and $r.enabled (not (include "payment-service.relayEnabled" .)) }}
{{- fail "relay.enabled: the relay needs somewhere to deliver: set relay.webhook.urls and/or relay.rabbitmq.existingSecret (or relay.rabbitmq.url), or relay.enabled=false" }}
{{- end }}
{{- if and $r.enabled $r.webhook.urls (not (or $r.webhook.secret $r.webhook.existingSecret)) }}
{{- fail "relay.webhook: webhooks are signed: set relay.webhook.existingSecret (or relay.webhook.secret) along with relay.webhook.urls" }}
{{- end }}
{{- if and $r.enabled (le (int $r.terminationGracePeriodSeconds) $shutdown) }}
{{- fail (printf "relay.terminationGracePeriodSeconds (%d) must exceed config.shutdownTimeoutSeconds (%d), the relay's wait for the deliveries under way, or a stopping relay is killed mid-delivery" (int $r.terminationGracePeriodSeconds) $shutdown) }}
{{- end }}
{{- range .Values.apiKeys.keys }}
{{- if lt (len (trim .)) 16 }}
{{- fail "apiKeys.keys: every key must be at least 16 characters long" }}
{{- end }}
{{- if contains "," . }}
{{- fail "apiKeys.keys: a key must not contain a comma (the keys are joined with commas)" }}
{{- end }}
{{- end }}
{{- end }}
