{{/*
The chart's name (nameOverride wins).
*/}}
{{- define "gaia.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's resources: the release name, plus the chart's name unless
the release name contains it already ("gaia" for `helm install gaia`). 63 characters at
most: some name fields are DNS labels.
*/}}
{{- define "gaia.fullname" -}}
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
"gaia-0.1.0", for the helm.sh/chart label.
*/}}
{{- define "gaia.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every resource; each template adds app.kubernetes.io/component. (Not
app.kubernetes.io/managed-by=gaia: that one marks the Jobs the operator creates; Helm's own
value, "Helm", is set here.)
*/}}
{{- define "gaia.labels" -}}
helm.sh/chart: {{ include "gaia.chart" . }}
app.kubernetes.io/name: {{ include "gaia.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gaia
{{- end }}

{{/*
The labels that select the operator pod (the Deployment's and the Service's selector).
*/}}
{{- define "gaia.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gaia.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
The operator's ServiceAccount.
*/}}
{{- define "gaia.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gaia.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The workers' ServiceAccount (`launch`): its pods' projected tokens are what the operator's
/work/* endpoints accept. It has no rights of its own.
*/}}
{{- define "gaia.workerServiceAccountName" -}}
{{- default (printf "%s-worker" (include "gaia.fullname" .)) .Values.workers.serviceAccount.name }}
{{- end }}

{{/*
The image, its tag defaulting to the chart's appVersion.
*/}}
{{- define "gaia.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
