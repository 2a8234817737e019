{{/*
Expand the name of the chart.
*/}}
{{- define "turnwise.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "turnwise.fullname" -}}
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
Create chart name and version as used by the chart label.
*/}}
{{- define "turnwise.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "turnwise.labels" -}}
helm.sh/chart: {{ include "turnwise.chart" . }}
{{ include "turnwise.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: turnwise
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels (of the serving pods; the sidecar Deployment adds its own component label)
*/}}
{{- define "turnwise.selectorLabels" -}}
app.kubernetes.io/name: {{ include "turnwise.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "turnwise.serverSelectorLabels" -}}
{{ include "turnwise.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "turnwise.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "turnwise.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference from {repository, tag, digest}; the second argument is the fallback tag.
Usage: include "turnwise.imageRef" (list .Values.image .Chart.AppVersion)
*/}}
{{- define "turnwise.imageRef" -}}
{{- $img := index . 0 -}}
{{- $fallbackTag := index . 1 -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default $fallbackTag $img.tag | toString) -}}
{{- end -}}
{{- end }}

{{- define "turnwise.image" -}}
{{- include "turnwise.imageRef" (list .Values.image .Chart.AppVersion) -}}
{{- end }}

{{- define "turnwise.sidecarImage" -}}
{{- $img := dict "repository" (default .Values.image.repository .Values.sidecar.image.repository) "tag" (default .Values.image.tag .Values.sidecar.image.tag) "digest" "" -}}
{{- if and (not .Values.sidecar.image.repository) (not .Values.sidecar.image.tag) -}}
{{- $_ := set $img "digest" .Values.image.digest -}}
{{- end -}}
{{- include "turnwise.imageRef" (list $img .Chart.AppVersion) -}}
{{- end }}

{{- define "turnwise.secretName" -}}
{{- include "turnwise.fullname" . }}
{{- end }}

{{- define "turnwise.configMapName" -}}
{{- include "turnwise.fullname" . }}
{{- end }}

{{/*
Replicas the service wants at least: the HPA's minimum, or replicaCount.
*/}}
{{- define "turnwise.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ .Values.autoscaling.minReplicas | int }}{{ else }}{{ .Values.replicaCount | int }}{{ end }}
{{- end }}

{{- define "turnwise.maxReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ .Values.autoscaling.maxReplicas | int }}{{ else }}{{ .Values.replicaCount | int }}{{ end }}
{{- end }}

{{/* ---------------------------------------------------------------- Redis ------------------------ */}}

{{/*
Which store the service uses: subchart | url | host | embedded.
*/}}
{{- define "turnwise.redis.mode" -}}
{{- if .Values.redis.enabled -}}subchart
{{- else if .Values.externalRedis.url -}}url
{{- else if .Values.externalRedis.host -}}host
{{- else -}}embedded
{{- end -}}
{{- end }}

{{/*
Full name of the bitnami/redis subchart, mirroring its common.names.fullname (fullnameOverride,
nameOverride, and the release-name-contains-chart-name rule), so the Service and Secret names match.
*/}}
{{- define "turnwise.redis.fullname" -}}
{{- if .Values.redis.fullnameOverride -}}
{{- .Values.redis.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default "redis" .Values.redis.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/*
Secret name and key holding the Redis password; empty name = no password.
*/}}
{{- define "turnwise.redis.passwordSecretName" -}}
{{- $mode := include "turnwise.redis.mode" . -}}
{{- if eq $mode "subchart" -}}
{{- if .Values.redis.auth.enabled -}}
{{- default (include "turnwise.redis.fullname" .) .Values.redis.auth.existingSecret -}}
{{- end -}}
{{- else if eq $mode "host" -}}
{{- if .Values.externalRedis.existingSecret -}}
{{- .Values.externalRedis.existingSecret -}}
{{- else if .Values.externalRedis.password -}}
{{- include "turnwise.secretName" . -}}
{{- end -}}
{{- end -}}
{{- end }}

{{- define "turnwise.redis.passwordSecretKey" -}}
{{- $mode := include "turnwise.redis.mode" . -}}
{{- if and (eq $mode "subchart") .Values.redis.auth.existingSecret -}}
{{- default "redis-password" .Values.redis.auth.existingSecretPasswordKey -}}
{{- else if and (eq $mode "host") .Values.externalRedis.existingSecret -}}
{{- .Values.externalRedis.existingSecretPasswordKey -}}
{{- else -}}
redis-password
{{- end -}}
{{- end }}

{{/*
The Redis URL. With a password it references $(REDIS_PASSWORD), which Kubernetes expands from the
env var of that name defined before it, so the password never appears in a manifest or ConfigMap.
*/}}
{{- define "turnwise.redis.url" -}}
{{- $mode := include "turnwise.redis.mode" . -}}
{{- $hasPassword := ne (include "turnwise.redis.passwordSecretName" .) "" -}}
{{- if eq $mode "url" -}}
{{- .Values.externalRedis.url -}}
{{- else if eq $mode "subchart" -}}
{{- $port := dig "master" "service" "ports" "redis" 6379 .Values.redis | int -}}
{{- $auth := ternary ":$(REDIS_PASSWORD)@" "" $hasPassword -}}
{{- printf "redis://%s%s-master:%d/0" $auth (include "turnwise.redis.fullname" .) $port -}}
{{- else if eq $mode "host" -}}
{{- $x := .Values.externalRedis -}}
{{- $auth := "" -}}
{{- if $hasPassword -}}
{{- $auth = printf "%s:$(REDIS_PASSWORD)@" $x.username -}}
{{- else if $x.username -}}
{{- $auth = printf "%s@" $x.username -}}
{{- end -}}
{{- printf "%s://%s%s:%d/%d" (ternary "rediss" "redis" $x.tls) $auth $x.host ($x.port | int) ($x.db | int) -}}
{{- end -}}
{{- end }}

{{/*
Environment shared by the service and the sidecar: the ConfigMap, the API keys, the Redis password
and URL. (env entries win over envFrom, and $(REDIS_PASSWORD) needs the password defined first.)
*/}}
{{- define "turnwise.envFrom" -}}
- configMapRef:
    name: {{ include "turnwise.configMapName" . }}
{{- end }}

{{- define "turnwise.env" -}}
- name: HOME
  value: /tmp
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- if or .Values.auth.existingSecret .Values.auth.apiKeys }}
- name: TURNWISE_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ default (include "turnwise.secretName" .) .Values.auth.existingSecret }}
      key: {{ ternary .Values.auth.existingSecretKey "api-keys" (not (empty .Values.auth.existingSecret)) }}
{{- end }}
{{- $pwSecret := include "turnwise.redis.passwordSecretName" . }}
{{- if $pwSecret }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $pwSecret }}
      key: {{ include "turnwise.redis.passwordSecretKey" . }}
- name: TURNWISE_REDIS_URL
  value: {{ include "turnwise.redis.url" . | quote }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------------- Checks ----------------------- */}}

{{/*
Combinations that would deploy something broken fail the render with a message saying what to change.
*/}}
{{- define "turnwise.validate" -}}
{{- $mode := include "turnwise.redis.mode" . -}}
{{- $max := include "turnwise.maxReplicas" . | int -}}
{{- if and (eq $mode "embedded") (gt $max 1) -}}
{{- fail (printf "turnwise: without Redis (redis.enabled=false and no externalRedis.url/host) the service keeps call windows in process memory, so it can run only one replica, but up to %d are configured. Enable redis or externalRedis, or set autoscaling.enabled=false and replicaCount=1." $max) -}}
{{- end -}}
{{- if and .Values.redis.enabled (or .Values.externalRedis.url .Values.externalRedis.host) -}}
{{- fail "turnwise: redis.enabled=true and externalRedis are both set; choose one (set redis.enabled=false to use externalRedis)." -}}
{{- end -}}
{{- if and .Values.externalRedis.url .Values.externalRedis.host -}}
{{- fail "turnwise: set externalRedis.url or externalRedis.host, not both." -}}
{{- end -}}
{{- if and .Values.externalRedis.url (or .Values.externalRedis.password .Values.externalRedis.existingSecret) -}}
{{- fail "turnwise: externalRedis.url is used as is and must not carry a password; with a password set externalRedis.host/port and externalRedis.password or existingSecret." -}}
{{- end -}}
{{- if not (or .Values.bundle.persistence.enabled .Values.bundle.image.enabled) -}}
{{- fail "turnwise: nothing provides the model bundle: enable bundle.persistence (a PVC holding it) or bundle.image (an init container copying it from an image), or both." -}}
{{- end -}}
{{- if and .Values.bundle.image.enabled (not (or .Values.bundle.image.tag .Values.bundle.image.digest)) -}}
{{- fail "turnwise: bundle.image.enabled needs bundle.image.tag or bundle.image.digest (the bundle version to serve)." -}}
{{- end -}}
{{- if .Values.sidecar.enabled -}}
{{- if not (has .Values.sidecar.mode (list "container" "deployment")) -}}
{{- fail (printf "turnwise: sidecar.mode must be container or deployment, not %q." .Values.sidecar.mode) -}}
{{- end -}}
{{- if eq $mode "embedded" -}}
{{- fail "turnwise: the training sidecar consumes the feedback stream in Redis; enable redis or externalRedis." -}}
{{- end -}}
{{- if and (eq .Values.sidecar.mode "container") (gt $max 1) -}}
{{- fail (printf "turnwise: sidecar.mode=container puts a trainer in every pod, and up to %d replicas are configured: each trainer would learn from its own share of the feedback and publish its own bundle. Use sidecar.mode=deployment (one trainer, bundle on a shared PVC) or run one replica (autoscaling.enabled=false, replicaCount=1)." $max) -}}
{{- end -}}
{{- if and (eq .Values.sidecar.mode "deployment") (not .Values.bundle.persistence.enabled) -}}
{{- fail "turnwise: sidecar.mode=deployment publishes bundles to a volume shared with the service pods; set bundle.persistence.enabled=true (ReadWriteMany when replicas spread over nodes)." -}}
{{- end -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (not (or .Values.autoscaling.targetCPUUtilizationPercentage .Values.autoscaling.queueDepth.enabled .Values.autoscaling.extraMetrics)) -}}
{{- fail "turnwise: autoscaling.enabled=true needs a metric: targetCPUUtilizationPercentage, queueDepth.enabled or extraMetrics." -}}
{{- end -}}
{{- $needed := add (int .Values.preStopSleepSeconds) (int .Values.config.shutdownGraceS) -}}
{{- if le (int .Values.terminationGracePeriodSeconds) $needed -}}
{{- fail (printf "turnwise: terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + config.shutdownGraceS (%d), or Kubernetes kills the pod mid-drain." (int .Values.terminationGracePeriodSeconds) $needed) -}}
{{- end -}}
{{- end }}

{{/* ---------------------------------------------------------------- Pod pieces ------------------- */}}

{{- define "turnwise.bundleClaimName" -}}
{{- default (printf "%s-bundle" (include "turnwise.fullname" .)) .Values.bundle.persistence.existingClaim -}}
{{- end }}

{{/*
The bundle volume: the PVC, or an emptyDir the init container fills.
*/}}
{{- define "turnwise.bundleVolume" -}}
- name: bundle
{{- if .Values.bundle.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "turnwise.bundleClaimName" . }}
{{- else }}
  emptyDir:
    sizeLimit: {{ .Values.bundle.emptyDirSizeLimit }}
{{- end }}
{{- end }}

{{/*
Init container copying the bundle out of the bundle image into <mountPath>/<version>/ and pointing
the bundle.path symlink at it: the layout the sidecar publishes new versions into. Idempotent and
safe with several pods on one shared PVC (the version directory is claimed with an atomic `ln -s`).
The link is re-pointed only when this image version was not seeded before, so a new bundle.image.tag
takes over once and versions the sidecar publishes later are not rolled back by a pod restart.
*/}}
{{- define "turnwise.bundleInitContainer" -}}
- name: bundle
  image: {{ include "turnwise.imageRef" (list .Values.bundle.image "") | quote }}
  imagePullPolicy: {{ .Values.bundle.image.pullPolicy }}
  command:
    - sh
    - -c
    - |
      set -eu
      [ -f "$SRC/bundle.json" ] || { echo "no bundle.json in $SRC of the bundle image" >&2; exit 1; }
      if [ ! -f "$DEST/$VERSION/bundle.json" ]; then
        tmp=".$VERSION.$HOSTNAME"
        rm -rf "$DEST/$tmp" && mkdir -p "$DEST/$tmp"
        cp -R "$SRC/." "$DEST/$tmp/"
        ln -sn "$tmp" "$DEST/$VERSION" 2>/dev/null || rm -rf "$DEST/$tmp"
      fi
      if [ ! -e "$DEST/$LINK" ] || [ "$(cat "$DEST/.seeded-$LINK" 2>/dev/null || true)" != "$VERSION" ]; then
        ln -sfn "$VERSION" "$DEST/$LINK"
        echo "$VERSION" > "$DEST/.seeded-$LINK"
      fi
      echo "bundle $VERSION available; $DEST/$LINK -> $(readlink "$DEST/$LINK")"
  env:
    - name: SRC
      value: {{ .Values.bundle.image.sourcePath | quote }}
    - name: DEST
      value: {{ .Values.bundle.mountPath | quote }}
    - name: LINK
      value: {{ .Values.bundle.path | quote }}
    - name: VERSION
      value: {{ printf "image-%s" (default .Values.bundle.image.digest .Values.bundle.image.tag | replace ":" "-") | trunc 63 | quote }}
  securityContext:
    {{- toYaml .Values.containerSecurityContext | nindent 4 }}
  resources:
    {{- toYaml .Values.bundle.image.resources | nindent 4 }}
  volumeMounts:
    - name: bundle
      mountPath: {{ .Values.bundle.mountPath }}
{{- end }}

{{/*
The training sidecar container (used in the service pod or in its own Deployment).
*/}}
{{- define "turnwise.sidecarContainer" -}}
- name: sidecar
  image: {{ include "turnwise.sidecarImage" . | quote }}
  imagePullPolicy: {{ .Values.sidecar.image.pullPolicy }}
  command:
    {{- toYaml .Values.sidecar.command | nindent 4 }}
  {{- with .Values.sidecar.args }}
  args:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  envFrom:
    {{- include "turnwise.envFrom" . | nindent 4 }}
  env:
    {{- include "turnwise.env" . | nindent 4 }}
    - name: TURNWISE_SIDECAR_WORK_DIR
      value: /scratch
    {{- with .Values.sidecar.checkpoint }}
    - name: TURNWISE_SIDECAR_CHECKPOINT
      value: {{ . | quote }}
    {{- end }}
    {{- with .Values.sidecar.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  securityContext:
    {{- toYaml .Values.containerSecurityContext | nindent 4 }}
  resources:
    {{- toYaml .Values.sidecar.resources | nindent 4 }}
  volumeMounts:
    - name: bundle
      mountPath: {{ .Values.bundle.mountPath }}
    - name: tmp
      mountPath: /tmp
    - name: scratch
      mountPath: /scratch
{{- end }}

{{/*
Pod anti-affinity preset over hostnames for the given selector labels.
Usage: include "turnwise.antiAffinity" (dict "preset" "soft" "labels" (include "..." .))
*/}}
{{- define "turnwise.antiAffinity" -}}
{{- if eq .preset "hard" }}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- .labels | nindent 10 }}
{{- else if eq .preset "soft" }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- .labels | nindent 12 }}
{{- end }}
{{- end }}
