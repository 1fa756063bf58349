{{/* Names: every object of a release is "<fullname>[-suffix]". */}}
{{- define "tfsched.fullname" -}}
{{- if contains "tfsched" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-tfsched" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tfsched.secondScheduler" -}}
{{- if eq .Values.topology "secondScheduler" }}true{{ end -}}
{{- end -}}

{{- define "tfsched.selectorLabels" -}}
app.kubernetes.io/name: tfsched
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tfsched.labels" -}}
{{ include "tfsched.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tfsched.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* kube-scheduler's image: the cluster's own version unless given (vendor suffixes such as -eks-... dropped). */}}
{{- define "tfsched.schedulerImage" -}}
{{- $tag := .Values.scheduler.image.tag | default (regexFind "^v[0-9]+\\.[0-9]+\\.[0-9]+" .Capabilities.KubeVersion.Version) -}}
{{ .Values.scheduler.image.repository }}:{{ $tag }}
{{- end -}}

{{- define "tfsched.serviceAccount" -}}{{ include "tfsched.fullname" . }}{{- end -}}
{{- define "tfsched.schedulerServiceAccount" -}}{{ include "tfsched.fullname" . }}-scheduler{{- end -}}
{{- define "tfsched.servingSecret" -}}{{ include "tfsched.fullname" . }}-tls{{- end -}}
{{- define "tfsched.clientSecret" -}}{{ include "tfsched.fullname" . }}-scheduler-client-tls{{- end -}}
{{- define "tfsched.workload" -}}{{ include "tfsched.fullname" . }}{{ if include "tfsched.secondScheduler" . }}-scheduler{{ end }}{{- end -}}

{{/* Paths inside the pod. */}}
{{- define "tfsched.configDir" -}}/etc/tfsched/config{{- end -}}
{{- define "tfsched.servingDir" -}}/etc/tfsched/tls{{- end -}}
{{- define "tfsched.schedulerConfigDir" -}}/etc/kubernetes/tfsched/config{{- end -}}
{{- define "tfsched.clientDir" -}}/etc/kubernetes/tfsched/client-tls{{- end -}}
{{- define "tfsched.numbaCacheDir" -}}/var/cache/tfsched/numba{{- end -}}

{{/* The Lease tfsched follows: the one its kube-scheduler leads on. */}}
{{- define "tfsched.schedulerLease" -}}
{{- if include "tfsched.secondScheduler" . -}}
namespace: {{ .Release.Namespace }}
leaseName: {{ .Values.scheduler.name }}
{{- else -}}
namespace: kube-system
leaseName: kube-scheduler
{{- end -}}
{{- end -}}

{{/* tfsched.yaml: the chart's settings, then the user's tfsched.config merged over them. */}}
{{- define "tfsched.config" -}}
{{- /* No leaderElection key (values.schema.json): tfsched follows its kube-scheduler's Lease, the one the RBAC lets it read. */ -}}
{{- $profile := ternary .Values.scheduler.name .Values.scheduler.extendProfile (eq .Values.topology "secondScheduler") -}}
{{- $base := dict
  "scheduling" (dict "schedulerNames" (list $profile))
  "autoscaling" (dict "metrics" (dict "prometheusURL" .Values.tfsched.prometheusURL))
  "leaderElection" (dict "followScheduler" (include "tfsched.schedulerLease" . | fromYaml))
-}}
{{- if include "tfsched.secondScheduler" . -}}
{{- $_ := set $base "webhook" (dict "schedulerName" .Values.scheduler.name) -}}
{{- end -}}
{{- $config := mustMergeOverwrite $base (deepCopy .Values.tfsched.config) -}}
{{- if .Values.scheduler.scoreInFilter -}}
{{- /* Set last: kube-scheduler is rendered without prioritizeVerb, so tfsched must rank in filter. */ -}}
{{- $_ := set $config.scheduling "scoreInFilter" true -}}
{{- end -}}
{{- $config | toYaml -}}
{{- end -}}

{{/* The client certificate kube-scheduler presents to the extender (the client Secret's files). */}}
{{- define "tfsched.extenderTLS" -}}
certFile: {{ include "tfsched.clientDir" . }}/tls.crt
keyFile: {{ include "tfsched.clientDir" . }}/tls.key
caFile: {{ include "tfsched.clientDir" . }}/ca.crt
{{- end -}}

{{/* The KubeSchedulerConfiguration (strictly decoded by kube-scheduler: only fields of kubescheduler.config.k8s.io/v1). */}}
{{- define "tfsched.schedulerConfig" -}}
{{- $second := include "tfsched.secondScheduler" . -}}
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
{{- if not $second }}
clientConnection:
  kubeconfig: {{ .Values.scheduler.kubeconfig }}
{{- end }}
leaderElection:
  leaderElect: true
  {{- if $second }}
  resourceNamespace: {{ .Release.Namespace }}
  resourceName: {{ .Values.scheduler.name }}
  {{- end }}
  leaseDuration: {{ .Values.scheduler.leaderElection.leaseDuration }}
  renewDeadline: {{ .Values.scheduler.leaderElection.renewDeadline }}
  retryPeriod: {{ .Values.scheduler.leaderElection.retryPeriod }}
profiles:
- schedulerName: {{ ternary .Values.scheduler.name .Values.scheduler.extendProfile (not (empty $second)) }}
  {{- with .Values.scheduler.percentageOfNodesToScore }}
  percentageOfNodesToScore: {{ . }}
  {{- end }}
  {{- if .Values.scheduler.scoreAllPods }}
  # tfsched scores every pod by the GPUs its CPU and memory would strand; these two spread
  # pods by CPU and memory and undo that (openb replay: bench/RESULTS.md). Filters stay.
  plugins:
    score:
      disabled:
      - name: NodeResourcesFit
      - name: NodeResourcesBalancedAllocation
  {{- end }}
extenders:
- urlPrefix: {{ ternary "https" "http" (not (empty $second)) }}://127.0.0.1:{{ .Values.tfsched.port }}
  filterVerb: filter
  {{- if not (or .Values.scheduler.scoreAllPods .Values.scheduler.scoreInFilter) }}
  prioritizeVerb: prioritize
  {{- end }}
  bindVerb: bind
  # Each extender score (0-10) counts as score x weight x 10 against the in-tree Score plugins.
  weight: {{ .Values.scheduler.extenderWeight }}
  enableHTTPS: {{ not (empty $second) }}
  {{- if $second }}
  # kube-scheduler proves itself with a client certificate; tfsched's certificate names 127.0.0.1.
  tlsConfig:
    {{- include "tfsched.extenderTLS" . | nindent 4 }}
  {{- end }}
  httpTimeout: {{ .Values.scheduler.extenderTimeout }}
  # Only node names are sent; tfsched keeps its own node cache.
  nodeCacheCapable: true
  # A failed filter call fails the scheduling cycle (the pod is retried) instead of
  # placing a GPU pod without the extender.
  ignorable: false
  # Only pods that request this resource reach the extender; NodeResourcesFit ignores it,
  # so nodes need not advertise it (clustermodel.annotations.MANAGED_RESOURCE).
  managedResources:
  - name: tensor-fusion.ai/gpu
    ignoredByScheduler: true
{{- if .Values.scheduler.scoreAllPods }}
# Every pod, GPU or not, scored by tfsched (placementMode LeastFragmentation): where a pod's
# CPU and memory would strand GPUs. No managedResources: kube-scheduler asks for all pods.
# Ignorable: pods without GPUs are still scheduled while tfsched is unreachable.
- urlPrefix: {{ ternary "https" "http" (not (empty $second)) }}://127.0.0.1:{{ .Values.tfsched.port }}
  prioritizeVerb: prioritize
  weight: {{ .Values.scheduler.extenderWeight }}
  enableHTTPS: {{ not (empty $second) }}
  {{- if $second }}
  tlsConfig:
    {{- include "tfsched.extenderTLS" . | nindent 4 }}
  {{- end }}
  httpTimeout: {{ .Values.scheduler.extenderTimeout }}
  nodeCacheCapable: true
  ignorable: true
{{- end }}
{{- end -}}

{{- define "tfsched.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
capabilities: {drop: [ALL]}
{{- end -}}
