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
{{- $img := dict "repository" .Values.sidecar.image.repository "tag" (default .Values.image.tag .Values.sidecar.image.tag) "digest" .Values.sidecar.image.digest -}}
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
Which store the service uses: valkey | url | host | embedded.
*/}}
{{- define "turnwise.redis.mode" -}}
{{- if .Values.valkey.enabled -}}valkey
{{- else if .Values.externalRedis.url -}}url
{{- else if .Values.externalRedis.host -}}host
{{- else -}}embedded
{{- end -}}
{{- end }}

{{/*
Name of the chart's Valkey (StatefulSet, Services, Secret, ConfigMap). At most 52 characters: the
StatefulSet controller appends a revision hash to it in a 63-character label.
*/}}
{{- define "turnwise.valkey.fullname" -}}
{{- printf "%s-valkey" (include "turnwise.fullname" . | trunc 45 | trimSuffix "-") -}}
{{- end }}

{{- define "turnwise.valkey.selectorLabels" -}}
{{ include "turnwise.selectorLabels" . }}
app.kubernetes.io/component: valkey
{{- end }}

{{/*
Secret name and key holding the Redis password; empty name = no password.
*/}}
{{- define "turnwise.redis.passwordSecretName" -}}
{{- $mode := include "turnwise.redis.mode" . -}}
{{- if eq $mode "valkey" -}}
{{- if .Values.valkey.auth.enabled -}}
{{- default (include "turnwise.valkey.fullname" .) .Values.valkey.auth.existingSecret -}}
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
{{- if eq $mode "valkey" -}}
{{- ternary .Values.valkey.auth.existingSecretPasswordKey "valkey-password" (not (empty .Values.valkey.auth.existingSecret)) -}}
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
{{- else if eq $mode "valkey" -}}
{{- $auth := ternary ":$(REDIS_PASSWORD)@" "" $hasPassword -}}
{{- printf "redis://%s%s:%d/0" $auth (include "turnwise.valkey.fullname" .) (.Values.valkey.port | int) -}}
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
The bucket bounds of turnwise_request_duration_seconds (service/metrics.py LATENCY_BUCKETS; a test
keeps the two equal): an SLO threshold must be one of them to be measurable from the histogram.
*/}}
{{- define "turnwise.latencyBuckets" -}}
0.0005 0.001 0.0025 0.005 0.0075 0.01 0.015 0.025 0.05 0.075 0.1 0.15 0.25 0.5 1 2.5 5
{{- end }}

{{/*
Pods that mount the bundle claim: the service replicas, plus the trainer in sidecar.mode=deployment.
*/}}
{{- define "turnwise.bundleClaimPods" -}}
{{- $pods := include "turnwise.maxReplicas" . | int -}}
{{- if and .Values.sidecar.enabled (eq .Values.sidecar.mode "deployment") -}}
{{- $pods = add1 $pods -}}
{{- end -}}
{{- $pods -}}
{{- end }}

{{/*
Combinations that would deploy something broken fail the render with a message saying what to change.
*/}}
{{- define "turnwise.validate" -}}
{{- if hasKey .Values "redis" -}}
{{- fail "turnwise: the redis.* values (the bitnami/redis subchart) were replaced in chart 0.2.0: use valkey.* for the chart's own Valkey (valkey.enabled, valkey.auth.existingSecret, valkey.persistence.*) or externalRedis.* for your own Redis." -}}
{{- end -}}
{{- $mode := include "turnwise.redis.mode" . -}}
{{- $max := include "turnwise.maxReplicas" . | int -}}
{{- if and (eq $mode "embedded") (gt $max 1) -}}
{{- fail (printf "turnwise: without Redis (valkey.enabled=false and no externalRedis.url/host) the service keeps call windows in process memory, so it can run only one replica, but up to %d are configured. Enable valkey or externalRedis, or set autoscaling.enabled=false and replicaCount=1." $max) -}}
{{- end -}}
{{- if and .Values.valkey.enabled (or .Values.externalRedis.url .Values.externalRedis.host) -}}
{{- fail "turnwise: valkey.enabled=true and externalRedis are both set; choose one (set valkey.enabled=false to use externalRedis)." -}}
{{- end -}}
{{- if and .Values.externalRedis.url .Values.externalRedis.host -}}
{{- fail "turnwise: set externalRedis.url or externalRedis.host, not both." -}}
{{- end -}}
{{- if and .Values.externalRedis.url (or .Values.externalRedis.password .Values.externalRedis.existingSecret) -}}
{{- fail "turnwise: externalRedis.url is used as is and must not carry a password; with a password set externalRedis.host/port and externalRedis.password or existingSecret." -}}
{{- end -}}
{{- /* ------------------------------------------------------------------ the bundle */ -}}
{{- $b := .Values.bundle -}}
{{- if not (has $b.source (list "image" "url" "oci" "claim")) -}}
{{- fail (printf "turnwise: bundle.source must be image, url, oci or claim, not %q." $b.source) -}}
{{- end -}}
{{- if and (eq $b.source "claim") (not (and $b.persistence.enabled $b.persistence.existingClaim)) -}}
{{- fail "turnwise: bundle.source=claim serves the bundle already on an existing PVC: set bundle.persistence.enabled=true and bundle.persistence.existingClaim (a claim the chart creates starts empty, so the pods could never become ready). To fill a new claim, use bundle.source=image, url or oci with bundle.persistence.enabled=true." -}}
{{- end -}}
{{- if eq $b.source "url" -}}
{{- if not (regexMatch "^https?://[^/]+" $b.url.location) -}}
{{- fail (printf "turnwise: bundle.source=url needs bundle.url.location, an http:// or https:// URL of the bundle .tar.gz (got %q)." $b.url.location) -}}
{{- end -}}
{{- if not (regexMatch "^[0-9a-f]{64}$" $b.url.sha256) -}}
{{- fail "turnwise: bundle.source=url needs bundle.url.sha256, the sha256 (64 lowercase hex digits) of the .tar.gz: the download is checked before it is unpacked." -}}
{{- end -}}
{{- end -}}
{{- if and (eq $b.source "oci") (not (regexMatch "^[a-z0-9.-]+(:[0-9]+)?/[^:@]+(:[A-Za-z0-9_.-]+|@sha256:[0-9a-f]{64})$" $b.oci.reference)) -}}
{{- fail (printf "turnwise: bundle.source=oci needs bundle.oci.reference as registry/repository:tag or registry/repository@sha256:<digest> (got %q)." $b.oci.reference) -}}
{{- end -}}
{{- if $b.persistence.enabled -}}
{{- $pods := include "turnwise.bundleClaimPods" . | int -}}
{{- $modes := $b.persistence.accessModes -}}
{{- $where := "bundle.persistence.accessModes" -}}
{{- if $b.persistence.existingClaim -}}
{{- $found := lookup "v1" "PersistentVolumeClaim" .Release.Namespace $b.persistence.existingClaim -}}
{{- $modes = dig "spec" "accessModes" list $found -}}
{{- $where = printf "the existing claim %s" $b.persistence.existingClaim -}}
{{- end -}}
{{- if and (gt $pods 1) $modes (not (has "ReadWriteMany" $modes)) -}}
{{- fail (printf "turnwise: up to %d pods mount the bundle claim, but %s is %s: pods scheduled on another node cannot attach it and never start. Use a ReadWriteMany claim (bundle.persistence.accessModes: [ReadWriteMany] with a storage class that offers it), or keep the bundle per pod (bundle.persistence.enabled=false with bundle.source=image, url or oci), or run one replica (autoscaling.enabled=false, replicaCount=1)." $pods $where (join "," $modes)) -}}
{{- end -}}
{{- end -}}
{{- /* ------------------------------------------------------------------ the sidecar */ -}}
{{- if .Values.sidecar.enabled -}}
{{- if not (has .Values.sidecar.mode (list "container" "deployment")) -}}
{{- fail (printf "turnwise: sidecar.mode must be container or deployment, not %q." .Values.sidecar.mode) -}}
{{- end -}}
{{- if eq $mode "embedded" -}}
{{- fail "turnwise: the training sidecar consumes the feedback stream in Redis; enable valkey or externalRedis." -}}
{{- end -}}
{{- if and (eq .Values.sidecar.mode "container") (gt $max 1) -}}
{{- fail (printf "turnwise: sidecar.mode=container puts a trainer in every pod, and up to %d replicas are configured: each trainer would learn from its own share of the feedback and publish its own bundle. Use sidecar.mode=deployment (one trainer, bundle on a shared PVC) or run one replica (autoscaling.enabled=false, replicaCount=1)." $max) -}}
{{- end -}}
{{- if and (eq .Values.sidecar.mode "deployment") (not .Values.bundle.persistence.enabled) -}}
{{- fail "turnwise: sidecar.mode=deployment publishes bundles to a volume shared with the service pods; set bundle.persistence.enabled=true (ReadWriteMany)." -}}
{{- end -}}
{{- end -}}
{{- /* ------------------------------------------------------------------ scaling, shutdown, alerts */ -}}
{{- if and .Values.autoscaling.enabled (not (or .Values.autoscaling.targetCPUUtilizationPercentage .Values.autoscaling.queueDepth.enabled .Values.autoscaling.extraMetrics)) -}}
{{- fail "turnwise: autoscaling.enabled=true needs a metric: targetCPUUtilizationPercentage, queueDepth.enabled or extraMetrics." -}}
{{- end -}}
{{- $drain := max (int .Values.config.shutdownGraceS) (int (.Values.config.drainS | default 20)) -}}
{{- $needed := add (int .Values.preStopSleepSeconds) $drain -}}
{{- if le (int .Values.terminationGracePeriodSeconds) $needed -}}
{{- fail (printf "turnwise: terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + the drain (config.drainS, config.shutdownGraceS: %d), or Kubernetes kills the pod mid-drain." (int .Values.terminationGracePeriodSeconds) $needed) -}}
{{- end -}}
{{- if .Values.metrics.prometheusRule.enabled -}}
{{- $slo := .Values.metrics.prometheusRule.slo -}}
{{- if not (has (toString $slo.latencySeconds) (splitList " " (include "turnwise.latencyBuckets" .))) -}}
{{- fail (printf "turnwise: metrics.prometheusRule.slo.latencySeconds (%v) must be a bucket bound of turnwise_request_duration_seconds (%s), or the latency SLO cannot be measured." $slo.latencySeconds (include "turnwise.latencyBuckets" .)) -}}
{{- end -}}
{{- range $name, $target := dict "latencyTarget" $slo.latencyTarget "availabilityTarget" $slo.availabilityTarget -}}
{{- if not (and (gt (float64 $target) 0.0) (lt (float64 $target) 1.0)) -}}
{{- fail (printf "turnwise: metrics.prometheusRule.slo.%s (%v) must be between 0 and 1 (exclusive)." $name $target) -}}
{{- end -}}
{{- end -}}
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
The bundle init container for bundle.source image | url | oci (nothing for claim). Each fills
<mountPath>/<version>/ and points the bundle.path symlink at it: the layout the sidecar publishes new
versions into. Idempotent and safe with several pods on one shared PVC (the version directory is
claimed with an atomic `ln -s`). The link is re-pointed only when this version was not seeded before,
so a new bundle version takes over once and versions the sidecar publishes later are not rolled back
by a pod restart. url/oci run `python -m bundle.fetch` (bundle/fetch.py) in the service image; it
checks the download's digest, unpacks it safely and verifies the bundle's checksums.
*/}}
{{- define "turnwise.bundleInitContainer" -}}
{{- $b := .Values.bundle -}}
{{- if eq $b.source "image" }}
- name: bundle
  image: {{ include "turnwise.imageRef" (list $b.image .Chart.AppVersion) | quote }}
  imagePullPolicy: {{ $b.image.pullPolicy }}
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
      value: {{ $b.image.sourcePath | quote }}
    - name: DEST
      value: {{ $b.mountPath | quote }}
    - name: LINK
      value: {{ $b.path | quote }}
    - name: VERSION
      value: {{ printf "image-%s" (default (default .Chart.AppVersion $b.image.tag) $b.image.digest | replace ":" "-") | trunc 63 | quote }}
  securityContext:
    {{- toYaml .Values.containerSecurityContext | nindent 4 }}
  resources:
    {{- toYaml $b.fetchResources | nindent 4 }}
  volumeMounts:
    - name: bundle
      mountPath: {{ $b.mountPath }}
{{- else if has $b.source (list "url" "oci") }}
- name: bundle
  image: {{ include "turnwise.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
    - python
    - -m
    - bundle.fetch
    - --dest
    - {{ $b.mountPath | quote }}
    - --link
    - {{ $b.path | quote }}
    {{- if eq $b.source "url" }}
    - url
    - {{ $b.url.location | quote }}
    - --sha256
    - {{ $b.url.sha256 | quote }}
    {{- else }}
    - oci
    - {{ $b.oci.reference | quote }}
    {{- if $b.oci.pullSecret }}
    - --auth-file
    - /run/secrets/registry/.dockerconfigjson
    {{- end }}
    {{- if $b.oci.plainHTTP }}
    - --plain-http
    {{- end }}
    {{- end }}
  env:
    - name: HOME
      value: /tmp
  securityContext:
    {{- toYaml .Values.containerSecurityContext | nindent 4 }}
  resources:
    {{- toYaml $b.fetchResources | nindent 4 }}
  volumeMounts:
    - name: bundle
      mountPath: {{ $b.mountPath }}
    - name: tmp
      mountPath: /tmp
    {{- if and (eq $b.source "oci") $b.oci.pullSecret }}
    - name: registry-auth
      mountPath: /run/secrets/registry
      readOnly: true
    {{- end }}
{{- end }}
{{- end }}

{{/*
Pod volumes the bundle init container needs beyond bundle and tmp.
*/}}
{{- define "turnwise.bundleExtraVolumes" -}}
{{- if and (eq .Values.bundle.source "oci") .Values.bundle.oci.pullSecret }}
- name: registry-auth
  secret:
    secretName: {{ .Values.bundle.oci.pullSecret }}
    items:
      - key: .dockerconfigjson
        path: .dockerconfigjson
{{- end }}
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
