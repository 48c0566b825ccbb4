{{/* Names: <release>-<component>, cut to 63 characters. */}}
{{- define "sgs.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sgs.name" -}}
{{- printf "%s-%s" (include "sgs.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sgs.selectorLabels" -}}
app.kubernetes.io/name: sgs
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "sgs.labels" -}}
{{ include "sgs.selectorLabels" . }}
app.kubernetes.io/part-of: sgs
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- with .root.Values.site.name }}
sgs.io/site: {{ . }}
{{- end }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "sgs.metadata" -}}
name: {{ include "sgs.name" . }}
namespace: {{ .root.Release.Namespace }}
labels:
  {{- include "sgs.labels" . | nindent 2 }}
{{- with .root.Values.site.dataCentre }}
annotations:
  sgs.io/data-centre: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* image: registry/name:tag, or @digest when one is pinned. */}}
{{- define "sgs.image" -}}
{{- $image := .root.Values.image -}}
{{- if $image.digest -}}
{{- printf "%s/%s@%s" $image.registry .name $image.digest -}}
{{- else -}}
{{- printf "%s/%s:%s" $image.registry .name (default .root.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The restricted Pod Security Standard: non-root, no privilege escalation, no capabilities, RuntimeDefault seccomp. */}}
{{- define "sgs.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "sgs.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* env var from a key of the component's Secret: dict "name" "key" "secret" "optional" */}}
{{- define "sgs.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end -}}

{{- define "sgs.secretName" -}}
{{- default (include "sgs.name" .) .values.existingSecret -}}
{{- end -}}

{{- define "sgs.podMeta" -}}
labels:
  {{- include "sgs.labels" . | nindent 2 }}
{{- with .root.Values.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Scheduling, pull secrets and the service account of a component's pod spec. */}}
{{- define "sgs.podCommon" -}}
serviceAccountName: {{ include "sgs.name" . }}
securityContext:
  {{- include "sgs.podSecurityContext" . | nindent 2 }}
{{- with .root.Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* A scratch /tmp (the root filesystem is read-only) plus the component's extra volumes. */}}
{{- define "sgs.volumes" -}}
volumes:
  - name: tmp
    emptyDir: {}
{{- with .values.extraVolumes }}
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "sgs.volumeMounts" -}}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- with .values.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Environment every Python deployable shares: tracing, and the component's extra env. */}}
{{- define "sgs.commonEnv" -}}
- name: OTEL_SERVICE_NAME
  value: sgs-{{ .component }}
{{- with .root.Values.tracing.endpoint }}
- name: SGS_TRACING_ENDPOINT
  value: {{ . | quote }}
- name: SGS_TRACING_SAMPLING
  value: {{ $.root.Values.tracing.sampling | quote }}
{{- end }}
{{- with .values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "sgs.pdb" -}}
{{- if and .values.podDisruptionBudget.enabled (gt (int .replicas) 1) }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  {{- include "sgs.metadata" . | nindent 2 }}
spec:
  minAvailable: 1
  selector:
    matchLabels:
      {{- include "sgs.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{- define "sgs.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  {{- include "sgs.metadata" . | nindent 2 }}
automountServiceAccountToken: {{ .automount }}
{{- end -}}

{{/* JSON list for a pydantic-settings list[str] variable. */}}
{{- define "sgs.jsonList" -}}
{{- toJson (default (list) .) -}}
{{- end -}}

{{- define "sgs.archiveUrl" -}}
{{- printf "http://%s.%s.svc:%d" (include "sgs.name" (dict "root" . "component" "archive")) .Release.Namespace (int .Values.archive.port) -}}
{{- end -}}

{{- define "sgs.transferUrl" -}}
{{- printf "http://%s.%s.svc:%d" (include "sgs.name" (dict "root" . "component" "transfer")) .Release.Namespace (int .Values.transfer.port) -}}
{{- end -}}
