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
Whether the chart creates a Secret for the server (any of the database or API key data): "true" or "".
*/}}
{{- define "payment-service.createSecret" -}}
{{- if or (not .Values.database.existingSecret) (and .Values.apiKeys.keys (not .Values.apiKeys.existingSecret)) }}true{{- end }}
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
{{- range .Values.apiKeys.keys }}
{{- if lt (len (trim .)) 16 }}
{{- fail "apiKeys.keys: every key must be at least 16 characters long" }}
{{- end }}
{{- if contains "," . }}
{{- fail "apiKeys.keys: a key must not contain a comma (the keys are joined with commas)" }}
{{- end }}
{{- end }}
{{- end }}
