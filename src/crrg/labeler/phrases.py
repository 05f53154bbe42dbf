"""Mention phrases of the CheXpert-14 observations, as regular-expression fragments.

Each observation has *finding* phrases, whose mere mention asserts it ("cardiomegaly", "pleural
effusion"), and optionally *subject* rules: an anatomical subject ("heart size", "costophrenic
angle") that asserts the observation only together with an abnormal qualifier ("enlarged",
"blunted") and denies it together with a normal one ("normal", "sharp"). "Heart size is normal" is
therefore a negative Cardiomegaly mention and "stable heart size" no mention at all, which keeps
the common normal-report sentences from producing false positives.

*Unmentions* are phrases that contain a mention word but mean something else ("pericardial
effusion", "vertebral body collapse"); a mention inside one is discarded.

:data:`OTHER_FINDINGS` are abnormal findings outside the 14 observations (emphysema, granuloma,
degenerative spine, hernia, ...). As in the CheXpert labeler, a positive or uncertain mention of one
of them prevents "No Finding" without producing a label of its own.

Decisions worth knowing: a calcified granuloma is an old healed infection, not a Lung Lesion (it is
an other finding); interstitial markings and scarring are Lung Opacity (CheXpert's convention),
interstitial or alveolar *edema* and vascular congestion are Edema; blunting of a costophrenic
angle is Pleural Effusion; pleural thickening, plaques and pleural scarring are Pleural Other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

W = r"[a-z\-]+"  # one word


@dataclass(frozen=True)
class SubjectRule:
    """An anatomical subject that needs a qualifier within its clause to become a mention."""

    subject: str
    abnormal: str
    normal: str = ""
    uncertain: str = ""  # qualifiers that make the mention uncertain ("borderline")


@dataclass(frozen=True)
class ObservationPhrases:
    findings: tuple[str, ...] = ()
    subjects: tuple[SubjectRule, ...] = ()
    unmentions: tuple[str, ...] = field(default_factory=tuple)


_NORMAL = r"normal(?! limits? of)|within normal limits|unremarkable|not (?:\w+ )?enlarged|not widened|preserved|maintained"
_BORDERLINE = r"borderline|upper limits? of normal|upper normal|top normal|top-normal|high normal|at the upper limit"

PHRASES: dict[str, ObservationPhrases] = {
    "Enlarged Cardiomediastinum": ObservationPhrases(
        findings=(
            r"(?:widen(?:ed|ing)|prominence) (?:of the )?(?:superior |upper )?mediastin\w*",
            r"mediastinal widening",
            r"enlarged cardiomediastinal",
            r"mediastinal (?:lymph node )?(?:enlargement|adenopathy|lymphadenopathy|prominence)",
        ),
        subjects=(
            SubjectRule(
                subject=r"(?:cardio)?mediastin(?:al|um)(?: (?:silhouette|contour|contours|shadow|width|structures))?",
                abnormal=r"widen\w*|enlarg\w*|prominen\w*|wide\b|increased",
                normal=_NORMAL,
            ),
        ),
    ),
    "Cardiomegaly": ObservationPhrases(
        findings=(
            r"cardiomegaly",
            r"(?:cardiac|heart) enlargement",
            r"enlarge(?:d|ment of the) (?:heart|cardiac)",
            r"cardiac hypertrophy",
        ),
        subjects=(
            SubjectRule(
                subject=r"heart(?: size)?|cardiac (?:size|silhouette|shadow|contour|contours|dimensions?)|cardiomediastinal silhouette|cardiopericardial silhouette|cardiac",
                abnormal=r"enlarg\w*|large|increased(?: in size)?|prominen\w*",
                normal=_NORMAL,
                uncertain=_BORDERLINE,
            ),
        ),
    ),
    "Lung Opacity": ObservationPhrases(
        findings=(
            r"opaci\w+",
            r"infiltrat\w*",
            r"air ?-?space (?:disease|process|filling)",
            r"(?:increased |streaky |patchy |hazy |focal |basilar |lung |pulmonary )densit(?:y|ies)",
            r"densit(?:y|ies) (?:in|at|within|of|over|projecting|overlying) the (?:\w+ )?(?:lung|lobe|base|bases|lingula|apex|apices|hemithorax|retrocardiac)",
            r"retrocardiac densit(?:y|ies)",
            r"interstitial (?:markings?|pattern|prominence|lung disease|disease|thickening|changes)",
            r"(?:increased|prominent|coarse|coarsened|reticular|chronic) (?:interstitial|lung|pulmonary|bronchovascular) markings",
            r"reticula(?:r|tion|ted)\w*",
            r"scar\b|scarring|scars\b|cicatri\w*",
            r"haziness|hazy",
            r"peribronchial (?:thickening|cuffing)",
        ),
        unmentions=(
            r"nodular opaci\w+|calcified (?:opaci\w+|densit\w+)|pleural (?:scar|scarring)|opaci\w+ (?:is|are)? ?(?:compatible|consistent) with (?:a )?(?:calcified )?granuloma",
            r"(?:pleural|pleuro-?parenchymal|apical pleural) (?:scar\w*)",
        ),
    ),
    "Lung Lesion": ObservationPhrases(
        findings=(
            r"nodul(?:e|es|ar opaci\w+|ar densit\w+|arity)",
            r"mass(?:es)?\b",
            r"(?:lung|pulmonary|cavitary|cavitating|parenchymal|spiculated) lesions?",
            r"\blesions?\b",
            r"tumou?rs?\b",
            r"neoplasm\w*",
            r"carcinoma|malignan\w*",
        ),
        unmentions=(
            r"calcified (?:nodul\w*|lesions?)|nodul\w* (?:\w+ ){0,3}calcifi\w*|mass effect|soft tissue mass|(?:bone|bony|osseous|lytic|sclerotic|blastic|skeletal) lesions?|lesions? (?:of|in) the (?:bone|rib|spine|vertebra\w*)|nipple",
        ),
    ),
    "Edema": ObservationPhrases(
        findings=(
            r"edema",
            r"(?:vascular|venous|pulmonary) (?:congestion|engorgement)",
            r"congestive (?:heart )?failure|\bchf\b",
            r"cephalization",
            r"kerley",
            r"fluid overload",
            r"interstitial (?:fluid|edema)",
        ),
        unmentions=(r"(?:soft tissue|subcutaneous|chest wall|extremity|facial|anasarca) edema",),
    ),
    "Consolidation": ObservationPhrases(findings=(r"consolidat\w*",)),
    "Pneumonia": ObservationPhrases(
        findings=(r"pneumonia\w*|bronchopneumonia", r"infectio(?:n|us)\w*(?: process)?", r"pneumonitis"),
        unmentions=(r"(?:old|prior|previous|remote|healed|granulomatous) (?:infection|granulomatous \w+)", r"granulomatous (?:infection|disease)"),
    ),
    "Atelectasis": ObservationPhrases(
        findings=(r"atelecta\w*", r"(?:lobar|lung|lobe|segmental) collapse", r"collapse of the (?:\w+ )?(?:lung|lobe)"),
    ),
    "Pneumothorax": ObservationPhrases(findings=(r"pneumothora\w*", r"hydropneumothorax", r"pleural air\b(?: collection)?"),),
    "Pleural Effusion": ObservationPhrases(
        findings=(
            r"effusion\w*",
            r"pleural fluid",
            r"(?:hydro|hemo|chylo)thorax",
            r"blunt\w* (?:of |at )?(?:the |both |bilateral )?(?:left |right |bilateral )?(?:lateral |posterior )?(?:costophrenic|cp|costodiaphragmatic)",
            r"(?:costophrenic|cp) (?:angle )?blunting",
            r"fluid (?:in|within|along) the (?:\w+ )?fissure",
        ),
        subjects=(
            SubjectRule(
                subject=r"(?:costophrenic|cp|costodiaphragmatic) (?:angles?|sulc\w+|recess\w*)",
                abnormal=r"blunt\w*|obscured|obliterat\w*",
                normal=r"sharp\w*|clear|normal|preserved|well defined|unremarkable",
            ),
        ),
        unmentions=(r"pericardial effusion\w*|joint effusion\w*",),
    ),
    "Pleural Other": ObservationPhrases(
        findings=(
            r"pleural (?:thickening|plaques?|scar\w*|calcifications?|fibrosis|reaction)",
            r"(?:pleuro-?parenchymal|pleural-parenchymal|apical pleural) (?:scar\w*|thickening|changes?)",
            r"fibrothorax",
            r"(?:apical )?pleural cap(?:ping|s)?",
            r"thickening of the (?:\w+ )?pleura",
        ),
    ),
    "Fracture": ObservationPhrases(
        findings=(r"fractur\w*", r"\bfx\b"),
        unmentions=(r"fracture (?:fixation|hardware)",),
    ),
    "Support Devices": ObservationPhrases(
        findings=(
            r"pacemaker|pacer\b|pacing (?:wires?|leads?|device)|(?:icd|aicd|defibrillator)\b|(?:cardiac )?(?:device|generator)",
            r"(?:transvenous |pacer |pacemaker |cardiac )?leads?\b",
            r"(?:central venous|venous|picc|central|port|subclavian|jugular|ij|swan-?ganz|dialysis|midline) (?:line|catheter)s?",
            r"catheters?\b|\bpicc\b|port-?a-?cath|(?:chest|infusion|mediport) port|\bport\b",
            r"(?:endotracheal|tracheostomy|nasogastric|orogastric|feeding|chest|enteric|gastric|ng|og|et|dobhoff|thoracostomy) tubes?",
            r"\btubes?\b|tracheostomy|\bett\b",
            r"sternotomy|sternal (?:wires?|sutures?)|(?:cerclage )?wires?\b",
            r"(?:surgical|vascular|cholecystectomy|clip) clips?|\bclips?\b",
            r"stents?\b|prosthe\w*|valve replacement|(?:prosthetic|mechanical|replaced) valves?|annuloplasty",
            r"hardware|(?:fixation|fusion) (?:rods?|hardware|screws?|plates?)|\bscrews?\b|\brods?\b|\bplates?\b|\banchors?\b|spinal fusion",
            r"drains?\b|\bfilter\b|\bcoils?\b|staples?\b|\bpump\b|loop recorder|\bvad\b|\blvad\b|\biabp\b|balloon pump",
            r"suture (?:line|material)s?|surgical sutures?|\bsutures?\b",
        ),
        unmentions=(
            r"nasogastric tube (?:is|was) removed|(?:no|without) (?:evidence of )?(?:tube|line)s?|tube removed",
            r"plate-?like|plate atelecta\w*|(?:bony|osseous) (?:plate)|end ?plates?",
            r"\bport(?:ion|able)\b",
        ),
    ),
}

# Abnormal findings outside the 14 observations: they rule out "No Finding" (CheXpert's convention).
OTHER_FINDINGS: tuple[str, ...] = (
    r"emphysema\w*|\bcopd\b|chronic obstructive|obstructive (?:pulmonary|lung) disease|bullae|bulla\b|bullous|blebs?\b",
    r"hyperinflat\w*|hyperexpan\w*|hyperaera\w*|overinflat\w*|over-?expan\w*|hyperlucen\w*|hyperdisten\w*|flatten\w* (?:of )?(?:the )?(?:\w+ )?(?:hemi)?diaphragm\w*",
    r"low (?:lung )?volumes?|hypoinflat\w*|hypoventilat\w*|(?:poor|shallow|decreased|suboptimal) (?:inspiration|inspiratory effort|lung volumes?)|volume loss",
    r"granulom\w*",
    r"calcifi\w*|calcinosis|atheroscl\w*|atheromatous",
    r"tortu\w*|ectatic|ectasia|aneurysm\w*|unfold\w*|dilat\w* (?:of )?(?:the )?(?:thoracic )?aort\w*",
    r"degenerat\w*|spondyl\w*|osteophyt\w*|arthrit\w*|arthropath\w*|\bdish\b|enthesophyt\w*|bridging",
    r"scoliosis|scoliotic|kyphos\w*|kyphotic|lordo\w*|deformit\w*|compression|wedg\w*|height loss|loss of (?:\w+ )?height",
    r"hernia\w*|eventration|elevat\w* (?:of )?(?:the )?(?:left |right )?(?:hemi)?diaphragm|(?:hemi)?diaphragm\w* (?:is |are )?elevat\w*",
    r"bronchiectasis|bronchitis|bronchiolitis|(?:bronchial|airway) wall thickening|airways? disease|reactive airway|asthma",
    r"fibros\w*|fibrotic|thickening",
    r"osteopeni\w*|osteoporo\w*|demineraliz\w*|sclero\w*|lytic|blastic|metasta\w*|bone island|enchondroma",
    r"pneumomediastinum|pneumoperitoneum|free air|subcutaneous (?:air|emphysema)|hematoma|hemorrhage|contusion",
    r"aspiration|foreign bod\w*|\bcyst\w*|cavit\w*|lucenc\w*|lucent",
    r"hypertension|azygos (?:lobe|fissure)|prominen\w*|cardiac (?:silhouette|contour) (?:is )?(?:abnormal|unusual)",
    r"postsurgical|post-?surgical|postoperative|post-?operative|status post|s/p|resection|lobectomy|pneumonectomy|mastectomy|thoracotomy|surgical changes",
    r"abnormalit\w*|abnormal\b|chronic (?:changes|lung|interstitial)|old (?:healed|injury|trauma|rib)",
)
